"""The device harness, in two packages.

``device.board``: what runs on the board (stdlib + numpy + one interpreter; shipped in every
bundle with the floor files it needs). ``device.host``: what runs on the host (bundles,
targets, emulated boards, the doctor); never shipped.
"""

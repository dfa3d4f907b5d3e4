"""A sparsity sweep from Python: one robust teacher, one student per sparsity, one table.

    python examples/sparsity_sweep.py --out runs/sweep [--data digits] [--sparsity 0.5 0.8 0.9]

Every student is a run folder (`robustedge report runs/sweep` draws the same numbers).
The test suite runs this file with --epochs 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustedge import api


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    a = p.parse_args()

    teacher = api.train(out=a.out / "teacher", data=a.data, model=a.model, epochs=a.epochs)
    rows = [("teacher", 0.0, teacher.clean_acc, teacher.robust_acc(), teacher.params)]
    for s in a.sparsity:
        st = api.compress(
            out=a.out / f"student-{s:g}", teacher=str(teacher.run), sparsity=s, epochs=a.epochs
        )
        rows.append(
            (
                f"student {s:g}",
                st.sparsity["global"],
                st.clean_acc,
                st.robust_acc(),
                st.nonzero_params,
            )
        )

    attacks = list(rows[0][3])
    print(
        f"{'run':<14} {'sparsity':>8} {'clean':>7} "
        + " ".join(f"{k:>14}" for k in attacks)
        + f" {'non-zero':>9}"
    )
    for name, sp, clean, robust, nz in rows:
        cells = " ".join(f"{100 * robust[k]:13.2f}%" for k in attacks)
        print(f"{name:<14} {100 * sp:7.1f}% {100 * clean:6.2f}% {cells} {nz:>9,}")


if __name__ == "__main__":
    main()

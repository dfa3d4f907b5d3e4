"""Where a recipe's stages run: here in order (``local``), or as Ray tasks (``ray``).

Both drive the same :class:`~robustedge.recipe.runner.StageRunner`: the cache check and the
stage records are made in this process, only ``stage.execute`` runs elsewhere, so the cache,
the outputs and the summary are the same whichever executor ran them.

- ``local`` runs the stages in plan order in this process, except that bench stages of
  different device targets (a board fleet) run at the same time, each in its own thread
  (stages sharing a ``lock``, i.e. one board, never overlap).
- ``ray`` submits every stage whose upstream stages are done as a Ray task with a resource
  request (1 CPU per training / compression / evaluation / export stage, 1 GPU as well when it
  trains on CUDA), on a local Ray instance or the cluster at ``address``
  (``pip install robustedge[scale]``). Independent stages (the students of a sweep, their
  evaluations and exports) run in parallel, each in a fresh worker process.

When a stage fails, no new stage starts; the stages already running finish and are recorded
(valid and cached), then the first error is raised. Ctrl-C cancels what is running: a stage
whose record was not written is redone by the next run.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from robustedge.errors import RobustEdgeError
from robustedge.recipe.runner import SkipStage, Stage, StageResult, StageRunner

logger = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")
COMPUTE_KINDS = ("train", "compress", "evaluate", "export")
RAY_RETRIES = 3  # times Ray reruns a stage whose worker process or node died


@dataclass(frozen=True)
class ExecutorSpec:
    """``--executor`` and its settings."""

    kind: str = "local"
    address: Optional[str] = None  # ray: an existing cluster (default: start a local one)
    num_cpus: Optional[int] = None  # ray: CPUs of the local instance (default: all)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"unknown executor '{self.kind}' (known: {', '.join(EXECUTORS)})")
        if self.address is not None and self.kind != "ray":
            raise ValueError("--address needs --executor ray")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.num_cpus is not None and (self.kind != "ray" or self.address is not None):
            # it sizes the local Ray instance this run starts: elsewhere it would do nothing
            raise ValueError("--ray-cpus needs --executor ray without --address")


def run_stages(
    runner: StageRunner, stages: Sequence[Stage], spec: Optional[ExecutorSpec] = None
) -> List[StageResult]:
    """Run ``stages`` (plan order) with the executor of ``spec``; results in plan order."""
    spec = spec or ExecutorSpec()
    backend: Backend = RayBackend(spec) if spec.kind == "ray" else LocalBackend()
    try:
        schedule(runner, stages, backend)
    finally:
        backend.close()
    return [runner.results[s.id] for s in stages]


class Backend:
    """Starts ``stage.execute`` somewhere and reports when it is done."""

    def submit(self, stage: Stage) -> Any:
        raise NotImplementedError

    def can_start(self, stage: Stage, running: Sequence[Stage]) -> bool:
        return True

    def wait(self, handles: Sequence[Any]) -> List[Any]:
        """At least one finished handle of ``handles``."""
        raise NotImplementedError

    def result(self, handle: Any) -> Optional[float]:
        """Re-raise the stage's exception, if any (SkipStage included); else the seconds the
        stage ran, when the backend knows them (not counting time queued)."""
        raise NotImplementedError

    def cancel(self, handles: Sequence[Any]) -> None:
        pass

    def close(self) -> None:
        pass


def schedule(runner: StageRunner, stages: Sequence[Stage], backend: Backend) -> None:
    """Start every stage whose upstream stages have results (as the backend allows), record
    each as it ends; after a failure, let the running stages finish, then raise it."""
    pending = list(stages)
    running: Dict[Any, Tuple[Stage, Tuple[str, Dict[str, str]], float]] = {}
    error: Optional[BaseException] = None
    try:
        while pending or running:
            started = True
            while started and error is None:
                started = False
                for stage in list(pending):
                    if any(u not in runner.results for u in stage.upstream):
                        continue
                    busy = [s for s, _, _ in running.values()]
                    if stage.lock is not None and any(s.lock == stage.lock for s in busy):
                        continue
                    if not backend.can_start(stage, busy):
                        continue
                    pending.remove(stage)
                    ready = runner.prepare(stage)
                    if isinstance(ready, StageResult):
                        runner.add(ready)
                    else:
                        running[backend.submit(stage)] = (stage, ready, time.perf_counter())
                    started = True
                    break
            if not running:
                if error is not None or not pending:
                    break
                raise RobustEdgeError(f"stage {pending[0].id} waits on a stage not in the plan")
            for handle in backend.wait(list(running)):
                stage, ready, t0 = running.pop(handle)
                try:
                    took = backend.result(handle)
                except SkipStage as e:
                    runner.add(StageResult(stage.id, "skipped", note=str(e)))
                    continue
                except Exception as e:  # noqa: BLE001 - re-raised once the others finished
                    logger.info("stage %s failed: %s", stage.id, e)
                    error = error or e
                    continue
                took = time.perf_counter() - t0 if took is None else took
                runner.add(runner.finish(stage, ready, took))
    except KeyboardInterrupt:
        backend.cancel(list(running))
        raise
    if error is not None:
        raise error


class LocalBackend(Backend):
    """Stages in plan order in this thread; bench stages of different targets in parallel
    threads (a board fleet)."""

    def __init__(self) -> None:
        self.pool: Optional[cf.ThreadPoolExecutor] = None

    @staticmethod
    def _threaded(stage: Stage) -> bool:
        return stage.kind == "bench"

    def can_start(self, stage: Stage, running: Sequence[Stage]) -> bool:
        return not running or (self._threaded(stage) and all(map(self._threaded, running)))

    def submit(self, stage: Stage) -> cf.Future:
        if self._threaded(stage):
            if self.pool is None:
                self.pool = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="bench")
            return self.pool.submit(stage.execute)
        done: cf.Future = cf.Future()
        try:  # in this thread: Ctrl-C stops it at once, as with a plain loop
            stage.execute()
            done.set_result(None)
        except Exception as e:  # noqa: BLE001 - handed to schedule() through the future
            done.set_exception(e)
        return done

    def wait(self, handles: Sequence[cf.Future]) -> List[cf.Future]:
        finished, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in finished]

    def result(self, handle: cf.Future) -> Optional[float]:
        handle.result()
        return None

    def cancel(self, handles: Sequence[cf.Future]) -> None:
        for h in handles:
            h.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def stage_resources(stage: Stage, cluster_gpus: float = 0) -> Dict[str, float]:
    """The Ray resource request of a stage: 1 CPU for the compute stages, plus 1 GPU for
    training / compression on ``cuda`` (or ``auto`` when the cluster has a GPU); half a CPU
    for the others (copying a teacher, driving a board)."""
    if stage.kind not in COMPUTE_KINDS:
        return {"num_cpus": 0.5, "num_gpus": 0}
    device = str(stage.config.get("device") or "auto")
    trains = stage.kind in ("train", "compress")
    gpu = trains and (device.startswith("cuda") or (device == "auto" and cluster_gpus >= 1))
    return {"num_cpus": 1, "num_gpus": 1 if gpu else 0}


def _execute(fn: Callable[[], None]) -> Tuple[float, str]:
    """The body of a Ray task: run one stage (one thread per task for torch); its seconds and
    the id of the Ray node it ran on."""
    import ray
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, ray.get_runtime_context().get_node_id()


class RayBackend(Backend):
    """Each stage a Ray task with its resource request."""

    def __init__(self, spec: ExecutorSpec) -> None:
        try:
            import ray
        except ImportError:
            raise RobustEdgeError(
                "--executor ray needs Ray: pip install 'robustedge[scale]'"
            ) from None
        self.ray = ray
        self.started = False
        where = spec.address or "a local instance"
        if not ray.is_initialized():
            opts: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if spec.address:
                opts["address"] = spec.address
            else:
                opts["num_cpus"] = spec.num_cpus or os.cpu_count() or 1
            try:
                ray.init(**opts)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RobustEdgeError(f"cannot start Ray on {where}: {e}") from None
            self.started = True
        resources = ray.cluster_resources()
        self.gpus = float(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 0))
        logger.info("ray: %s with %g CPU(s), %g GPU(s)", where, cpus, self.gpus)
        # a task whose worker or node died is retried (elsewhere); a stage's own error is not.
        # max_calls=1: each stage in a fresh worker process, so a stage's peak RSS is its own
        # (ru_maxrss of a reused worker is the largest of every stage it ran) and no state
        # carries over; and a node with a warm worker does not take every queued stage of its
        # kind while another node's worker starts (Ray hands an idle leased worker the next)
        self.task = ray.remote(max_retries=RAY_RETRIES, retry_exceptions=False, max_calls=1)(
            _execute
        )
        self.stage_of: Dict[Any, str] = {}
        self.nodes: Dict[str, str] = {}  # stage id -> the Ray node id it finished on

    def submit(self, stage: Stage) -> Any:
        opts = stage_resources(stage, self.gpus)
        handle = self.task.options(**opts, name=stage.id).remote(stage.execute)
        self.stage_of[handle] = stage.id
        return handle

    def wait(self, handles: Sequence[Any]) -> List[Any]:
        done, _ = self.ray.wait(list(handles), num_returns=1)
        return list(done)

    def result(self, handle: Any) -> Optional[float]:
        from ray.exceptions import RayError, RayTaskError

        sid = self.stage_of.pop(handle, "?")
        try:
            seconds, node = self.ray.get(handle)
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise RobustEdgeError(f"stage {sid}: its Ray task failed: {_last_line(e)}") from None
        except RayError as e:  # the worker or node died more often than Ray retries
            raise RobustEdgeError(
                f"stage {sid} failed on the Ray cluster after {RAY_RETRIES} retries "
                f"({type(e).__name__}: {_last_line(e)})"
            ) from None
        self.nodes[sid] = node
        logger.info("stage %s ran on Ray node %s", sid, node)
        return float(seconds)

    def cancel(self, handles: Sequence[Any]) -> None:
        """Stop the running stages. Where this backend started Ray (a local instance, or its
        connection to a cluster), ``close`` shuts it down and that ends them: the job's
        workers are killed with it. Cancelling them first is not only redundant: Ray's
        ``cancel`` can abort the driver when a task completes at that moment (RAY_CHECK
        "Tried to complete task that was not pending", seen with Ray 2.60). In a Ray session
        of the caller's, each task is cancelled."""
        if self.started:
            return
        for h in handles:
            try:
                self.ray.cancel(h, force=True)
            except Exception as e:  # noqa: BLE001 - best effort while stopping
                logger.info("cancel failed: %s", e)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _last_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(e).__name__

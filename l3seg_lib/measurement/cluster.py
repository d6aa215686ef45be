"""``measure`` spread over Dask workers: a LocalCluster on this machine (``--workers N``) or an
existing cluster (``--scheduler tcp://host:8786``).

Each worker loads the model once (one onnxruntime thread per worker, so N workers use N cores)
and measures whole inputs with :func:`l3seg_lib.measurement.stages.measure_input`; the client
records each input in the ledger as it comes back, so the batch stays resumable. Workers write
overlays and masks into the output folder, which must be reachable from every worker (the same
machine, or a shared file system). The numbers equal those of a serial run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from l3seg_lib.dask_client import dask_client
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.result import InputResult
from l3seg_lib.measurement.stages import Measurer, measure_input

_PREDICTORS: dict[tuple, Predictor] = {}
"""One Predictor per worker process and model (kept between tasks)."""


def _predictor(model: str, device: str, postprocess: bool) -> Predictor:
    """The worker's cached single-threaded :class:`Predictor` for (``model``, ``device``, ``postprocess``)."""
    key = (model, device, postprocess)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = Predictor(model, device, num_threads=1, postprocess=postprocess)
    return _PREDICTORS[key]


def measure_one(inp, model: str, options: MeasureOptions, out: str) -> InputResult:
    """Measure one input on a worker (reading included; a read error is recorded in the result).
    The overlay bytes are not kept: the client's pages read the pictures back."""
    predictor = _predictor(model, options.device, options.postprocess)
    measurer = Measurer(options, predictor, Path(out), keep_overlays=False)
    try:
        return measure_input(inp, measurer)
    finally:
        measurer.close()


def run_on_dask(todo: list, model: Path, options: MeasureOptions, out: Path, record: Callable, progress: bool) -> None:
    """Measure ``todo`` on Dask workers; ``record(result)`` is called as each input finishes."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    with dask_client(options.workers, options.scheduler) as client:
        futures = client.map(measure_one, todo, model=str(model), options=options, out=str(out), pure=False)
        for future in tqdm(as_completed(futures), total=len(futures), desc="measure (dask)", unit="input",
                           disable=not progress, mininterval=2.0):
            record(future.result())


"""``l3seg serve``: the node's loop. Instances arrive on the SCP's threads (:mod:`.scp`) into the
durable intake (:mod:`.intake`); this loop, on the calling thread, completes the series that are
stable, measures them with :func:`l3seg_lib.measurement.orchestration.measure_folder` (the same
path, options, ledger and outputs as ``l3seg measure --dicom``, on ``<out>/series`` into
``<out>``), and sends each measured slice's SEG and SR to the PACS (:mod:`.sender`).

Nothing acknowledged is lost: at start the node takes up the series left in ``incoming/``, measures
the series in ``series/`` the ledger does not list, and sends what ``sent.csv`` does not list. A
series measured (or refused) once is never measured again: the ledger lists it. A failure to
measure or to send is logged and retried later; the node goes on. :meth:`Node.run` returns when
``stop`` is set (SIGTERM), after finishing the series being measured and one try at sending it.

A series that arrives in parts (new instances after it was complete) is measured again as a new
generation, and so is a series the administrator asks for again (``remeasure/<SeriesInstanceUID>``,
:mod:`.intake`): the SR of the later result (measurement or refusal) **supersedes** the earlier
ones: it lists them in PredecessorDocumentsSequence and says so in a text item "Supersedes an
earlier result" (:func:`~l3seg_lib.measurement.dicom_out.supersede`), and the log says
``event=superseded``. Every log line names the series by its SeriesInstanceUID (``series=``) and,
when it differs, the folder (``folder=<uid>_g2``).
"""

from __future__ import annotations

import csv
import logging
import math
import re
import ssl
import time
import threading
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path

from filelock import FileLock, Timeout

from l3seg_lib.errors import L3SegConfigError, NodeInUse
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.measurement.dicom_out import supersede, write_refusal_sr
from l3seg_lib.measurement.ledger import LEDGER
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.node.events import log_event
from l3seg_lib.node.intake import REMEASURE, SERIES, Completed, Intake, series_uid_of
from l3seg_lib.node.scp import Listening, StorageSCP, TLSFiles, check_ae_title
from l3seg_lib.names import csv_value
from l3seg_lib.node.sender import Destination, Item, Job, ObjectKind, Sender

NODE_LOCK = ".l3seg-serve.lock"
RETRY_MEASURE_S = 30.0
"""Seconds before a batch that failed (output not writable, ...) is tried again."""


@dataclass
class NodeConfig:
    """What ``l3seg serve`` was asked for; checked when made (AE titles, port, timeouts, sizes, the
    TLS files: which go together, that they exist), a bad value raising
    :class:`~l3seg_lib.errors.L3SegConfigError` that names the setting and its option."""

    out: Path
    model: str | Path | Predictor
    options: MeasureOptions
    ae_title: str = "L3SEG"
    """This node's AE title (the called AE title it answers to)."""
    host: str = "127.0.0.1"
    port: int = 11112
    """Port to listen on (0: a free one, logged)."""
    send_to: Destination | None = None
    allow: list[str] | None = None
    """Calling AE titles accepted (None: any)."""
    series_timeout: float = 10.0
    """Seconds without a new instance after which a series is complete."""
    tls: ssl.SSLContext | TLSFiles | None = None
    """TLS of the SCP: the node's certificate and key, and a CA for mutual TLS (:class:`TLSFiles`,
    or a context of :func:`l3seg_lib.node.scp.server_ssl_context`); None: plain."""
    send_tls: ssl.SSLContext | TLSFiles | None = None
    """TLS of the sending association (:class:`TLSFiles`, or a context of
    :func:`l3seg_lib.node.scp.client_ssl_context`; needs ``send_to``); None: plain."""
    max_series_mb: float | None = None
    """Refuse instances of a series past this size (MB); None: no limit."""
    refusal_sr: bool = False
    """Send an SR saying why for each series that could not be measured (``--refusal-sr``)."""
    poll_s: float = 0.2
    fsync: bool = True
    send_backoff: tuple[float, float] = (2.0, 300.0)
    """Seconds before the first retry of a failed send, and the most between retries."""

    def __post_init__(self) -> None:
        """Check what a type alone cannot say; the TLS files last, so that a missing partner
        option is named before a missing file."""
        def bad(name: str, problem: str) -> L3SegConfigError:
            """The error for setting ``name`` (with its option)."""
            return L3SegConfigError(f"{name}: {problem}")

        def positive(value: object) -> bool:
            """A finite number > 0 (not a bool)."""
            return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0

        if not isinstance(self.options, MeasureOptions):
            raise bad("options", f"expected MeasureOptions, got {type(self.options).__name__}")
        check_ae_title(self.ae_title, "ae_title (--ae-title)")
        if self.allow is not None:
            if isinstance(self.allow, str):
                raise bad("allow (--allow)", f"expected a list of AE titles (None: any), got {self.allow!r}")
            for title in self.allow:
                check_ae_title(title, "allow (--allow)")
        if not isinstance(self.host, str) or not self.host.strip():
            raise bad("host (--host)", f"expected an address to listen on, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, Integral) or not 0 <= self.port <= 65535:
            raise bad("port (--port)", f"expected 0-65535 (0: a free one), got {self.port!r}")
        if self.send_to is not None and not isinstance(self.send_to, Destination):
            raise bad("send_to (--send-to)", f"expected a Destination (parse_destination('AE@HOST:PORT')), "
                      f"got {self.send_to!r}")
        if not positive(self.series_timeout):
            raise bad("series_timeout (--series-timeout)", f"must be positive (seconds), got {self.series_timeout!r}")
        if self.max_series_mb is not None and not positive(self.max_series_mb):
            raise bad("max_series_mb (--max-series-mb)", f"must be positive (MB), got {self.max_series_mb!r}")
        if not positive(self.poll_s):
            raise bad("poll_s", f"must be positive (seconds), got {self.poll_s!r}")
        backoff = tuple(self.send_backoff) if isinstance(self.send_backoff, (tuple, list)) else ()
        if len(backoff) != 2 or not all(positive(b) for b in backoff) or backoff[0] > backoff[1]:
            raise bad("send_backoff", f"expected (first, most) seconds, 0 < first <= most, got {self.send_backoff!r}")
        for name, value in (("tls", self.tls), ("send_tls", self.send_tls)):
            if value is not None and not isinstance(value, (ssl.SSLContext, TLSFiles)):
                raise bad(name, f"expected TLSFiles or an ssl.SSLContext, got {type(value).__name__}")
        if isinstance(self.tls, TLSFiles) and not (self.tls.cert and self.tls.key):
            raise bad("tls", "--tls-cert and --tls-key go together (and --tls-ca needs them)")
        if isinstance(self.send_tls, TLSFiles) and bool(self.send_tls.cert) != bool(self.send_tls.key):
            raise bad("send_tls", "--send-tls-cert and --send-tls-key go together")
        if self.send_tls is not None and self.send_to is None:
            raise bad("send_tls", "--send-tls-ca/--send-tls-cert need --send-to (send_to: the PACS)")
        for name, files in (("tls", self.tls), ("send_tls", self.send_tls)):
            if not isinstance(files, TLSFiles):
                continue
            prefix = "--send-tls" if name == "send_tls" else "--tls"
            for part in ("cert", "key", "ca"):
                path = getattr(files, part)
                if path and not Path(path).is_file():
                    raise L3SegConfigError(f"{path}: no such file ({name}.{part}, {prefix}-{part})")


class Node:
    """One DICOM node on an output folder (see the module docstring)."""

    def __init__(self, cfg: NodeConfig):
        """Set up (nothing listens before :meth:`start`)."""
        self.cfg = cfg
        self.out = Path(cfg.out).resolve()
        self.intake = Intake(self.out, cfg.series_timeout,
                             None if cfg.max_series_mb is None else int(cfg.max_series_mb * 1e6), fsync=cfg.fsync)
        self.options = replace(cfg.options, dicom=True, progress=False, force=False, max_inputs=None,
                               workers=0, scheduler=None)
        self.tls = cfg.tls.server_context() if isinstance(cfg.tls, TLSFiles) else cfg.tls
        send_tls = cfg.send_tls.client_context() if isinstance(cfg.send_tls, TLSFiles) else cfg.send_tls
        self.sender = (Sender(self.out, cfg.send_to, cfg.ae_title, send_tls, backoff=cfg.send_backoff)
                       if cfg.send_to else None)
        self.jobs: dict[str, Job] = {}
        self.listening: Listening | None = None
        self.predictor: Predictor | None = None
        self._lock: FileLock | None = None
        self._measure_due = False
        self._measure_after = 0.0
        self.measured_batches = 0
        self._ledger_noted: set[str] = set()
        self._uids: dict[str, str] = {}

    # -- life -------------------------------------------------------------------------------------
    def start(self) -> int:
        """Lock the output folder, take up what a previous run left, load the model and listen;
        returns the port listened on."""
        self._lock = FileLock(str(self.out / NODE_LOCK), timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            self._lock = None
            raise NodeInUse(self.out, self.out / NODE_LOCK) from None
        try:
            for a in self.intake.recover():
                log_event("series-recovered", series=a.series_uid, instances=a.instances,
                          note="received before a restart; complete when stable")
            series_dir = self.out / SERIES
            self._measure_due = any(p.is_dir() for p in series_dir.iterdir())
            model = self.cfg.model
            self.predictor = model if isinstance(model, Predictor) else Predictor(
                model, self.options.device, postprocess=self.options.postprocess)
            scp = StorageSCP(self.intake, self.cfg.ae_title, self.cfg.allow)
            self.listening = scp.start(self.cfg.host, self.cfg.port, self.tls)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        log_event("listening", ae=self.cfg.ae_title, host=self.cfg.host, port=self.listening.port,
                  tls="yes" if self.tls else "no", allow=",".join(self.cfg.allow) if self.cfg.allow else "any",
                  send_to=str(self.cfg.send_to) if self.cfg.send_to else "none", out=str(self.out),
                  series_timeout_s=self.cfg.series_timeout, model=self.predictor.path.name)
        return self.listening.port

    def run(self, stop: threading.Event) -> None:
        """:meth:`start` (when not started) and loop until ``stop`` is set; then :meth:`close`."""
        if self.listening is None:
            self.start()
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.cfg.poll_s)
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening and release the output folder (what is left is taken up at the next start)."""
        if self.listening is not None:
            log_event("stopping")
            try:
                self.listening.shutdown()
            except Exception as exc:
                log_event("error", logging.ERROR, where="shutdown", reason=f"{type(exc).__name__}: {exc}")
            self.listening = None
            waiting = self.intake.arriving()
            log_event("stopped", series_arriving=len(waiting), series_unsent=len(self.jobs),
                      note="taken up at the next start" if waiting or self.jobs else None)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- one turn of the loop ---------------------------------------------------------------------
    def step(self, everything: bool = False) -> None:
        """Complete the stable series (every arriving one with ``everything``), measure what is
        new, send what is due. Never raises for one series' problem (logged)."""
        now = time.monotonic()
        try:
            completed, dropped = self.intake.complete_stable(now, everything)
        except OSError as exc:
            log_event("error", logging.ERROR, where="completing series", reason=str(exc))
            completed, dropped = [], []
        for a in dropped:
            log_event("series-repeated", logging.WARNING, series=a.series_uid, instances=a.instances,
                      note=f"every instance already received in a completed series: not measured again; to measure it "
                           f"again: touch {self.out / REMEASURE / a.name}")
        try:
            again, unknown = self.intake.remeasure_requested()
        except OSError as exc:
            log_event("error", logging.ERROR, where="remeasure requests", reason=str(exc))
            again, unknown = [], []
        for name in unknown:
            log_event("remeasure-unknown", logging.WARNING, series=name, note="no such series received: request removed")
        completed = completed + again
        for c in again:
            log_event("remeasure-requested", series=c.series_uid, folder=c.folder.name, instances=c.instances)
        for c in completed:
            self._log_completed(c)
        if completed:
            self._measure_due = True
        if self._measure_due and now >= self._measure_after:
            self._measure()
        self._send_due()

    def _log_completed(self, c: Completed) -> None:
        """Log a completed series (and remember its SeriesInstanceUID)."""
        self._uids[c.folder.name] = c.series_uid
        log_event("series-complete", series=c.series_uid, folder=c.folder.name if c.folder.name != c.series_uid else None,
                  instances=c.instances, mb=round(c.nbytes / 1e6, 1),
                  generation=c.generation if c.generation > 1 else None,
                  note="received again or in parts: measured again; its result supersedes the earlier one"
                  if c.generation > 1 else None)

    def _uid(self, folder: Path) -> str:
        """The SeriesInstanceUID of a series folder (read from one of its instances; the folder name when unreadable)."""
        name = folder.name
        if name not in self._uids:
            first = next(iter(sorted(folder.glob("*.dcm"))), None) if folder.is_dir() else None
            self._uids[name] = (series_uid_of(first) if first is not None else None) or name
        return self._uids[name]

    def _folder_field(self, folder: Path) -> str | None:
        """The folder's name for a log line, when it is not just the SeriesInstanceUID."""
        return folder.name if folder.name != self._uid(folder) else None

    def _earlier(self, folder: Path) -> list[Path]:
        """The earlier generations of a series folder ``<name>_g<k>`` (none for a first generation)."""
        m = re.fullmatch(r"(.+)_g(\d+)", folder.name)
        if not m:
            return []
        gens = self.intake.generations(m.group(1))
        return [g for g in gens if g != folder and (g.name == m.group(1) or int(g.name.rsplit("_g", 1)[1]) < int(m.group(2)))]

    def _supersede(self, folder: Path, sr_rel: str, rows: list[dict]) -> None:
        """Mark the SR ``sr_rel`` of a later generation ``folder`` as superseding the SRs of the
        earlier generations (measurement SRs and refusal SRs that were written), and log it."""
        earlier = self._earlier(folder)
        if not earlier or self.sender is not None and self.sender.was_sent(sr_rel):
            return
        import pydicom

        names = {str(g) for g in earlier}
        files = [str(r.get("dicom_sr") or "") for r in rows if str(r.get("source")) in names]
        files += [str(Path("dicom") / f"{g.name}_not_measured_sr.dcm") for g in earlier]
        datasets = []
        for f in dict.fromkeys(x for x in files if x):
            try:
                datasets.append(pydicom.dcmread(self.out / f, stop_before_pixels=True))
            except (OSError, pydicom.errors.InvalidDicomError):
                continue
        measured = {str(r.get("source")) for r in rows}
        what = "; ".join(f"{g.name}: {len(list(g.glob('*.dcm')))} instances, "
                         f"{'measured' if str(g) in measured else 'not measured'}" for g in earlier)
        note = (f"This result replaces l3seg's earlier result(s) for series {self._uid(folder)}, which arrived in "
                f"parts or was sent again: this one is from all {len(list(folder.glob('*.dcm')))} instances received "
                f"(earlier: {what}).")
        try:
            changed = supersede(self.out / sr_rel, datasets, note)
        except Exception as exc:  # an SR that cannot be read back: sent as it is
            log_event("error", logging.ERROR, where="supersede", series=self._uid(folder), reason=f"{type(exc).__name__}: {exc}")
            return
        if changed:
            log_event("superseded", series=self._uid(folder), folder=folder.name, earlier=",".join(g.name for g in earlier),
                      earlier_srs=len(datasets))

    def _ledger_sources(self) -> set[str]:
        """The inputs the ledger lists (measured, refused or for review)."""
        path = self.out / LEDGER
        if not path.is_file():
            return set()
        try:
            with open(path, newline="", encoding="utf-8") as f:
                return {csv_value(r["source"]) for r in csv.DictReader(f)}
        except (OSError, KeyError, csv.Error):
            return set()

    def _measure(self) -> None:
        """Measure the series in ``series/`` the ledger does not list; log each outcome; queue the sends."""
        before = self._ledger_sources()
        t0 = time.monotonic()
        try:
            res = measure_folder(self.out / SERIES, self.predictor, self.out, self.options)
        except Exception as exc:  # an output that cannot be written, ...: tried again later
            self._measure_after = time.monotonic() + RETRY_MEASURE_S
            log_event("measure-failed", logging.ERROR, reason=f"{type(exc).__name__}: {exc}",
                      retry_in_s=RETRY_MEASURE_S)
            return
        self._measure_due = False
        self.measured_batches += 1
        seconds = time.monotonic() - t0
        rows = res.measurements.to_dict("records") if len(res.measurements) else []
        errors = res.errors.to_dict("records") if len(res.errors) else []
        for r in rows:
            if r["source"] not in before:
                folder = Path(r["source"])
                log_event("measured", series=self._uid(folder), folder=self._folder_field(folder),
                          patient=r.get("patient_id"), slice=r.get("slice_index"),
                          sma_refined_cm2=_num(r.get("sma_refined_cm2")), smi_cm2_m2=_num(r.get("smi_cm2_m2")),
                          muscle_refined_hu_mean=_num(r.get("muscle_refined_hu_mean")),
                          review=_review(r), seconds=round(seconds, 2))
        for r in errors:
            if r["source"] not in before:
                folder = Path(str(r["source"]))
                log_event("not-measured", logging.WARNING, series=self._uid(folder), folder=self._folder_field(folder),
                          review="yes" if r.get("review") is True else "no", reason=r.get("error"),
                          note="an SR saying why is sent" if self.cfg.refusal_sr and self.sender else "nothing sent")
        self._queue(rows)
        if self.cfg.refusal_sr:
            self._queue_refusals(errors, rows)

    def _queue_refusals(self, errors: list[dict], rows: list[dict] | None = None) -> None:
        """An SR saying why for each series not measured (written once under ``dicom/``, every
        instance of the series its evidence, the reason without this machine's paths; sent once)."""
        if self.sender is None:
            return
        for r in errors:
            folder = Path(str(r["source"]))
            series = folder.name
            rel = Path("dicom") / f"{series}_not_measured_sr.dcm"
            if self.sender.was_sent(str(rel)):
                continue
            if not (self.out / rel).is_file():
                instances = sorted(folder.glob("*.dcm")) if folder.is_dir() else [folder]
                if not instances:
                    continue
                reason = str(r.get("error") or "not measured")
                if reason.startswith(str(folder)):  # "<folder>: why" -> "series <UID>: why"
                    reason = f"series {self._uid(folder)}{reason[len(str(folder)):]}"
                try:
                    write_refusal_sr(self.out / rel, instances, reason)
                except Exception as exc:  # an instance that cannot be read: nothing to refer to
                    log_event("not-sent", logging.WARNING, series=self._uid(folder), folder=self._folder_field(folder),
                              reason=f"refusal SR: {type(exc).__name__}: {exc}")
                    continue
            self._supersede(folder, str(rel), rows or [])
            job = self.jobs.setdefault(series, Job(series, []))
            if all(str(rel) != j.file for j in job.items):
                job.items.append(Item(self._uid(folder), ObjectKind.REFUSAL_SR, str(rel), series))

    def _queue(self, rows: list[dict]) -> None:
        """A send job per series for the SEG and SR of its measured slices not sent yet."""
        for r in rows:
            folder = Path(r["source"])
            series = folder.name
            items = [Item(self._uid(folder), kind, str(r.get(col) or ""), series)
                     for kind, col in ((ObjectKind.SEG, "dicom_seg"), (ObjectKind.SR, "dicom_sr"))]
            items = [it for it in items if it.file]
            if not items:
                if r["source"] not in self._ledger_noted:
                    self._ledger_noted.add(r["source"])
                    log_event("not-sent", logging.WARNING, series=self._uid(folder), folder=self._folder_field(folder),
                              reason=r.get("dicom_note") or "no SEG/SR written")
                continue
            if self.sender is None:
                continue
            items = [it for it in items if not self.sender.was_sent(it.file)]
            if not items:
                continue
            for it in items:
                if it.kind == ObjectKind.SR:
                    self._supersede(folder, it.file, rows)
            job = self.jobs.setdefault(series, Job(series, []))
            for it in items:
                if all(it.file != j.file for j in job.items):
                    job.items.append(it)

    def _send_due(self) -> None:
        """One try for each send job that is due."""
        if self.sender is None:
            return
        now = time.monotonic()
        for series, job in list(self.jobs.items()):
            if job.next_try <= now and self.sender.try_job(job, now):
                del self.jobs[series]

    def drain(self, timeout: float = 60.0) -> None:
        """Complete every arriving series now, measure, and send until nothing is left or
        ``timeout`` seconds passed (for tests and benchmarks)."""
        self.step(everything=True)
        end = time.monotonic() + timeout
        while self.jobs and time.monotonic() < end:
            time.sleep(0.05)
            self._send_due()


def _num(v) -> float | None:
    """A finite float, or None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 2) if f == f else None


def _review(row: dict) -> str:
    """``yes: <reasons>`` or ``no``."""
    if str(row.get("review_required")).lower() in ("true", "1", "yes"):
        return f"yes: {row.get('review_reasons')}"
    return "no"

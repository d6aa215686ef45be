"""Sending a series' DICOM SEG and SR to the PACS: a C-STORE SCU (pynetdicom), one association per
try, a record of what was sent (``<out>/sent.csv``) so that nothing is sent twice, and a back-off
between failed tries.

``sent.csv`` gets one row per object the PACS acknowledged (status 0x0000 or a warning), written
and fsync'ed as the response arrives: time, series folder, kind (``seg``/``sr``), file (relative
to the output folder), SOPInstanceUID, destination and status. An object listed for a
destination is never sent to it again; a node killed between the PACS's answer and the row
sends that one object again, under the same SOPInstanceUID (the PACS keeps one copy).
"""

from __future__ import annotations

import csv
import datetime as _dt
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from l3seg_lib.errors import L3SegConfigError
from l3seg_lib.node.events import log_event
from l3seg_lib.node.scp import check_ae_title

SENT = "sent.csv"
COLUMNS = ["time", "series", "kind", "file", "sop_instance_uid", "destination", "status"]
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
OK_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
"""Success and the warnings after which the PACS holds the object."""


@dataclass(frozen=True)
class Destination:
    """Where SEG and SR go: ``AE@HOST:PORT``; checked when made (an AE title, a host, a port
    1-65535: :class:`~l3seg_lib.errors.L3SegConfigError`)."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        """Check the AE title, the host and the port."""
        check_ae_title(self.ae_title, "send_to (--send-to) AE title")
        if not isinstance(self.host, str) or not self.host.strip():
            raise L3SegConfigError(f"send_to (--send-to): expected a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise L3SegConfigError(f"send_to (--send-to): port {self.port!r} is not 1-65535")

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``AE@HOST:PORT`` (an IPv6 host in brackets) -> :class:`Destination`;
    :class:`~l3seg_lib.errors.L3SegConfigError` (a ValueError) when malformed."""
    m = re.fullmatch(r"([^@]{1,16})@(\[[^\]]+\]|[^:@]+):(\d{1,5})", text.strip())
    if not m or not 0 < int(m.group(3)) < 65536 or m.group(1).strip() != m.group(1) or not m.group(1).isprintable():
        raise L3SegConfigError(f"--send-to {text!r}: expected AE@HOST:PORT (an AE title of 1-16 characters), "
                               "e.g. ORTHANC@127.0.0.1:4242")
    return Destination(m.group(1), m.group(2).strip("[]"), int(m.group(3)))


class ObjectKind(StrEnum):
    """What an object sent is (the ``kind`` column of ``sent.csv``)."""
    SEG = "seg"
    """The DICOM SEG of a measured slice."""
    SR = "sr"
    """The DICOM SR (TID 1500) of a measured slice."""
    REFUSAL_SR = "refusal-sr"
    """The SR saying why a series was not measured."""


@dataclass
class Item:
    """One object to send."""

    series: str
    """The SeriesInstanceUID of the measured series (the ``series`` column of ``sent.csv``)."""
    kind: ObjectKind
    file: str
    """Relative to the output folder."""
    folder: str = ""
    """The series folder under ``series/`` (``<uid>_g2`` for a second generation)."""


@dataclass
class Job:
    """The objects of one series still to send, and when to try next."""

    series: str
    items: list[Item]
    tries: int = 0
    next_try: float = 0.0
    last_error: str = ""
    done: list[Item] = field(default_factory=list)


class _Capture(logging.Handler):
    """Keeps the messages pynetdicom logs while the node associates (the reason of a failure,
    told in the node's own ``send-failed`` line instead of pynetdicom's ERROR lines)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one message."""
        self.lines.append(record.getMessage())


def no_delay(assoc) -> None:
    """Switch Nagle's algorithm off on an association's socket: pynetdicom writes a C-STORE's command
    and its dataset as separate PDUs, and with Nagle on, the dataset waits for the peer's delayed
    ACK of the command (about 40 ms per instance on Linux)."""
    import socket

    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


class Sender:
    """C-STORE SCU to one destination with a sent record under ``out``."""

    def __init__(self, out: Path, destination: Destination, ae_title: str = "L3SEG",
                 tls: ssl.SSLContext | None = None, timeout: float = 30.0,
                 backoff: tuple[float, float] = (2.0, 300.0)):
        """Send from AE title ``ae_title``; ``backoff``: (first delay, longest delay) in seconds."""
        self.out, self.dest, self.ae_title, self.tls, self.timeout = Path(out), destination, ae_title, tls, timeout
        self.backoff = backoff
        self.path = self.out / SENT
        self._lock = threading.Lock()
        self._sent = self._read()

    def _read(self) -> set[tuple[str, str]]:
        """(file, destination) of every object the record lists as sent."""
        if not self.path.is_file():
            return set()
        with open(self.path, newline="", encoding="utf-8") as f:
            return {(r["file"], r["destination"]) for r in csv.DictReader(f) if r.get("file")}

    def was_sent(self, file: str) -> bool:
        """Whether ``file`` (relative to the output folder) was sent to this destination."""
        return (file, str(self.dest)) in self._sent

    def _record(self, item: Item, sop_uid: str, status: int) -> None:
        """Append one row to the record, flushed to disk."""
        with self._lock:
            new = not self.path.is_file()
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(COLUMNS)
                w.writerow([_dt.datetime.now().isoformat(timespec="milliseconds"), item.series, item.kind, item.file,
                            sop_uid, str(self.dest), f"0x{status:04X}"])
                f.flush()
                os.fsync(f.fileno())
            self._sent.add((item.file, str(self.dest)))

    def delay(self, tries: int) -> float:
        """Seconds to wait after ``tries`` failed tries: doubling from the first delay, capped."""
        first, longest = self.backoff
        return min(first * 2 ** max(tries - 1, 0), longest)

    def send(self, job: Job) -> bool:
        """One try at sending the job's objects not yet sent, in one association; True when all
        are sent (each recorded as it is acknowledged), False after a failure (logged; the job
        keeps the rest)."""
        import pydicom
        from pynetdicom import AE
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        todo = [it for it in job.items if not self.was_sent(it.file)]
        if not todo:
            return True
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for sop_class in (SEGMENTATION_STORAGE, COMPREHENSIVE_3D_SR_STORAGE):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        kwargs = {"ae_title": self.dest.ae_title}
        if self.tls is not None:
            kwargs["tls_args"] = (self.tls, self.dest.host)
        capture = _Capture()
        library = logging.getLogger("pynetdicom")
        library.addHandler(capture)
        try:
            assoc = ae.associate(self.dest.host, self.dest.port, **kwargs)
        except Exception as exc:  # DNS, TLS set-up
            job.last_error = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            library.removeHandler(capture)
        if not assoc.is_established:
            job.last_error = self.why_no_association(assoc, capture.lines)
            return False
        no_delay(assoc)
        try:
            for it in todo:
                ds = pydicom.dcmread(self.out / it.file)
                status = assoc.send_c_store(ds)
                code = int(getattr(status, "Status", -1)) if status else -1
                if code not in OK_STATUSES:
                    job.last_error = (f"{it.kind} {it.file}: C-STORE status "
                                      f"{'none (connection lost or timed out)' if code < 0 else f'0x{code:04X}'}")
                    return False
                self._record(it, str(ds.SOPInstanceUID), code)
                job.done.append(it)
                log_event("sent", series=it.series, folder=it.folder if it.folder and it.folder != it.series else None,
                          kind=it.kind, sop=str(ds.SOPInstanceUID), to=str(self.dest),
                          status=f"0x{code:04X}")
            return True
        except Exception as exc:
            job.last_error = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            if assoc.is_established:
                assoc.release()

    def why_no_association(self, assoc, messages: list[str]) -> str:
        """Why the association to the PACS was not established, in words: rejected (with the
        PACS's reason, naming the called AE title when that is it), connection refused, no answer
        in time, or aborted; from the association's state and pynetdicom's messages."""
        text = " | ".join(messages)
        where = f"{self.dest.host}:{self.dest.port}"
        if assoc.is_rejected:
            reason = next((m.split(":", 1)[1].strip() for m in messages if m.startswith("Reason:")), "")
            result = next((m for m in messages if m.startswith("Result:")), "")
            called = f"called AE title {self.dest.ae_title!r}"
            if "called ae" in reason.lower():
                reason = f"{reason} ({called} is not known to the PACS: check --send-to)"
            elif "calling ae" in reason.lower():
                reason = f"{reason} (calling AE title {self.ae_title!r} is not registered in the PACS)"
            return f"association rejected by {where}: {reason or 'no reason given'}" + (f" [{result}]" if result else "")
        low = text.lower()
        if "refused" in low:
            return f"connection refused: nothing listens at {where} (PACS down?)"
        if "timed out" in low or "timeout" in low:
            return f"no answer from {where} within {self.timeout:g} s (PACS frozen, or a firewall drops the packets)"
        if "unreachable" in low or "no route" in low or "name or service" in low:
            return f"{where} cannot be reached: {messages[-1] if messages else 'network error'}"
        if assoc.is_aborted:
            return f"association aborted by {where}" + (f": {messages[-1]}" if messages else "")
        return f"no association with {where}" + (f": {messages[-1]}" if messages else "")

    def try_job(self, job: Job, now: float) -> bool:
        """:meth:`send`, and on failure log it and schedule the next try with back-off."""
        if self.send(job):
            return True
        job.tries += 1
        wait = self.delay(job.tries)
        job.next_try = now + wait
        log_event("send-failed", logging.WARNING, series=job.items[0].series if job.items else job.series,
                  folder=job.series if job.items and job.series != job.items[0].series else None,
                  to=str(self.dest), tries=job.tries,
                  retry_in_s=round(wait, 1), reason=job.last_error)
        return False

"""The node's DICOM Storage SCP (pynetdicom): C-ECHO, and C-STORE of CT Image Storage, Enhanced
CT and Legacy Converted Enhanced CT Image Storage in every transfer syntax l3seg reads.

A C-STORE is answered success only once :meth:`l3seg_lib.node.intake.Intake.store` has the
instance on disk. A dataset that cannot be decoded, that has no SeriesInstanceUID or whose SOP
Instance UID differs from the request's is refused (status 0xC210 / 0xA900, logged), as is one
that would pass the series size limit (0xA700) or that the disk refuses (0xA700); the association
goes on. Calling AE titles outside ``allow`` (when given) are rejected at association, as are
associations that call another AE title than the node's. TLS when an ``ssl.SSLContext`` is given.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from l3seg_lib.errors import L3SegConfigError, SeriesTooLarge
from l3seg_lib.node.events import log_event
from l3seg_lib.node.intake import Intake

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
LEGACY_ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.2")
STORAGE_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
VERIFICATION = UID("1.2.840.10008.1.1")

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    RLELossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless,
    JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
    UID("1.2.840.10008.1.2.4.201"), UID("1.2.840.10008.1.2.4.202"), UID("1.2.840.10008.1.2.4.203"),  # HTJ2K
)
"""The transfer syntaxes accepted: those l3seg's readers decode (tests/imageio/test_transfer_syntaxes.py)."""

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC210
DATASET_MISMATCH = 0xA900
OUT_OF_RESOURCES = 0xA700


@dataclass
class Listening:
    """A running SCP: its server (``shutdown()``) and the address it listens on."""

    server: object
    host: str
    port: int

    def shutdown(self) -> None:
        """Stop accepting associations and close the open ones."""
        self.server.shutdown()


class StorageSCP:
    """The C-ECHO / C-STORE handlers of the node, writing into an :class:`Intake`."""

    def __init__(self, intake: Intake, ae_title: str = "L3SEG", allow: list[str] | None = None):
        """Handlers storing into ``intake``; ``allow``: the calling AE titles accepted (None: any)."""
        self.intake, self.ae_title, self.allow = intake, ae_title, list(allow) if allow else None
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def application_entity(self):
        """The pynetdicom AE, with the node's presentation contexts and AE title checks."""
        from pynetdicom import AE

        ae = AE(ae_title=self.ae_title)
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.require_called_aet = True
        if self.allow:
            ae.require_calling_aet = self.allow
        ae.maximum_pdu_size = 0  # no limit: the peer sends PDUs as large as it likes
        ae.maximum_associations = 16
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        return ae

    def handlers(self) -> list:
        """(event, handler) pairs for ``AE.start_server``."""
        from pynetdicom import evt

        return [(evt.EVT_C_ECHO, self.on_echo), (evt.EVT_C_STORE, self.on_store),
                (evt.EVT_ACCEPTED, self.on_accepted), (evt.EVT_REJECTED, self.on_rejected),
                (evt.EVT_RELEASED, self.on_released), (evt.EVT_ABORTED, self.on_aborted)]

    def start(self, host: str = "127.0.0.1", port: int = 11112, ssl_context: ssl.SSLContext | None = None) -> Listening:
        """Listen on ``host:port`` (0: a free port, see :attr:`Listening.port`) in background threads."""
        ae = self.application_entity()
        server = ae.start_server((host, port), block=False, evt_handlers=self.handlers(), ssl_context=ssl_context)
        return Listening(server, host, server.server_address[1])

    # -- events -----------------------------------------------------------------------------------
    @staticmethod
    def _peer(event) -> tuple[str, str]:
        """(address:port, calling AE title) of an event's association."""
        req = event.assoc.requestor
        return f"{req.address}:{req.port}", str(req.ae_title).strip()

    def on_accepted(self, event) -> None:
        """Log an accepted association."""
        peer, calling = self._peer(event)
        with self._lock:
            self._counts[id(event.assoc)] = 0
        log_event("association-accepted", peer=peer, calling=calling, called=self.ae_title)

    def on_rejected(self, event) -> None:
        """Log a rejected association (a calling AE title not allowed, a wrong called AE title)."""
        peer, calling = self._peer(event)
        primitive = getattr(event.assoc.requestor, "primitive", None)  # the A-ASSOCIATE-RQ: the AE title it called
        called = str(getattr(primitive, "called_ae_title", None) or event.assoc.acceptor.ae_title).strip()
        if self.allow and calling not in self.allow:
            reason = "calling AE title not allowed"
        elif called != self.ae_title:
            reason = f"called AE title {called!r} is not this node's"
        else:
            reason = "rejected by the association negotiation"
        log_event("association-refused", logging.WARNING, peer=peer, calling=calling, called=called, reason=reason)

    def _ended(self, event, how: str, level: int = logging.INFO) -> None:
        """Log the end of an association with the number of instances it stored."""
        peer, calling = self._peer(event)
        with self._lock:
            n = self._counts.pop(id(event.assoc), 0)
        log_event(f"association-{how}", level, peer=peer, calling=calling, instances=n)

    def on_released(self, event) -> None:
        """Log a released association."""
        self._ended(event, "released")

    def on_aborted(self, event) -> None:
        """Log an aborted (dropped) association: the instances acknowledged are kept."""
        self._ended(event, "aborted", logging.WARNING)

    def on_echo(self, event) -> int:
        """C-ECHO: success."""
        peer, calling = self._peer(event)
        log_event("echo", peer=peer, calling=calling)
        return SUCCESS

    def on_store(self, event) -> int:
        """C-STORE: write the instance durably, then answer success (see the module docstring)."""
        peer, calling = self._peer(event)
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            ds = event.dataset
            series_uid = str(ds.get("SeriesInstanceUID", "") or "")
            ds_sop = str(ds.get("SOPInstanceUID", "") or "")
        except Exception as exc:  # a dataset pydicom cannot decode
            log_event("instance-refused", logging.WARNING, peer=peer, calling=calling, sop=sop_uid,
                      status="0xC210", reason=f"cannot decode the dataset: {type(exc).__name__}: {exc}")
            return CANNOT_UNDERSTAND
        problem = None
        if not series_uid:
            problem = "no SeriesInstanceUID"
        elif not sop_uid or (ds_sop and ds_sop != sop_uid):
            problem = f"SOPInstanceUID {ds_sop!r} differs from the request's {sop_uid!r}"
        if problem:
            log_event("instance-refused", logging.WARNING, peer=peer, calling=calling, sop=sop_uid, status="0xA900",
                      reason=problem)
            return DATASET_MISMATCH
        try:
            path = self.intake.store(series_uid, sop_uid, event.encoded_dataset())
        except SeriesTooLarge as exc:
            log_event("instance-refused", logging.WARNING, peer=peer, calling=calling, sop=sop_uid, status="0xA700",
                      reason=str(exc))
            return OUT_OF_RESOURCES
        except OSError as exc:
            log_event("instance-refused", logging.ERROR, peer=peer, calling=calling, sop=sop_uid, status="0xA700",
                      reason=f"cannot write: {exc}")
            return OUT_OF_RESOURCES
        with self._lock:
            self._counts[id(event.assoc)] = self._counts.get(id(event.assoc), 0) + 1
        log_event("instance-stored", logging.DEBUG, series=series_uid, sop=sop_uid, file=Path(path).name)
        return SUCCESS


def check_ae_title(title: str, where: str) -> str:
    """``title`` when it is an AE title (DICOM PS3.5 table 6.2-1, as pynetdicom checks it: at most
    16 ASCII characters, no backslash, no control character) that is not empty or all spaces;
    else :class:`~l3seg_lib.errors.L3SegConfigError` naming ``where`` (the setting and its option)."""
    from pynetdicom import _config  # pynetdicom's validators (its documented configuration)

    ok, reason = _config.VALIDATORS["AE"](title)
    if ok and not title.strip():
        ok, reason = False, "must not be empty or all spaces"
    if not ok:
        raise L3SegConfigError(f"{where} {title!r}: an AE title is 1-16 printable ASCII characters, without "
                               f"backslash, not all spaces ({reason})")
    return title


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files of one side of a TLS association: a certificate and its private key (they
    go together) and a CA. For the SCP (``NodeConfig.tls``) the node's certificate and key, and a
    CA whose signature peers must present (mutual TLS); for sending (``NodeConfig.send_tls``) the
    CA the PACS's certificate is verified against (None: the system's CAs), and a certificate and
    key when the PACS asks for the node's. :class:`~l3seg_lib.node.service.NodeConfig` checks them."""

    cert: str | Path | None = None
    key: str | Path | None = None
    ca: str | Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """The SCP's TLS (:func:`server_ssl_context`)."""
        return server_ssl_context(self.cert, self.key, self.ca)

    def client_context(self) -> ssl.SSLContext:
        """The sending association's TLS (:func:`client_ssl_context`)."""
        return client_ssl_context(self.ca, self.cert, self.key)


def server_ssl_context(cert: str | Path, key: str | Path, ca: str | Path | None = None) -> ssl.SSLContext:
    """TLS for the SCP: the node's certificate and key; with ``ca``, peers must present a
    certificate signed by it (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca:
        ctx.load_verify_locations(str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(ca: str | Path | None = None, cert: str | Path | None = None,
                       key: str | Path | None = None) -> ssl.SSLContext:
    """TLS for sending to the PACS: the PACS's certificate is verified against ``ca`` (else the
    system's CAs) and its host name or IP address; ``cert`` and ``key`` present the node's own
    certificate (for a PACS that requires mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


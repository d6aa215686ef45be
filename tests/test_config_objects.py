"""The settings of ``measure`` and ``serve`` are built once and checked where they live: the two
commands declare their shared options through one function and build ``MeasureOptions`` through
another; ``MeasureOptions``, ``NodeConfig`` and ``Destination`` check their own values, so a library
caller gets the same errors as the command line."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

import pytest

from l3seg_lib.cli import _measure_options, build_parser, main
from l3seg_lib.config import DEVICES, CompositionConfig, Params
from l3seg_lib.errors import L3SegConfigError
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.node.scp import TLSFiles
from l3seg_lib.node.sender import Destination, parse_destination
from l3seg_lib.node.service import NodeConfig

SHARED = ("--model", "--no-postprocess", "--device", "--no-hu-check", "--clinical", "--params", "--cutoffs",
          "--max-slices", "--read-threads")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    ap = build_parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _action(parser: argparse.ArgumentParser, flag: str) -> tuple:
    """What an option is: everything argparse keeps about it."""
    (a,) = [a for a in parser._actions if flag in a.option_strings]
    return (type(a).__name__, tuple(a.option_strings), a.dest, a.default, a.type, a.choices, a.nargs, a.help,
            a.metavar, a.required)


def test_measure_and_serve_declare_the_same_shared_options():
    commands = _subparsers()
    for flag in SHARED:
        assert _action(commands["measure"], flag) == _action(commands["serve"], flag), flag
    # predict segments the same way: its model options are the same objects' twins too
    for flag in ("--model", "--no-postprocess", "--device", "--no-hu-check"):
        assert _action(commands["predict"], flag) == _action(commands["measure"], flag), flag


def test_device_has_the_same_choices_everywhere():
    found = {name: _action(p, "--device") for name, p in _subparsers().items()
             if any("--device" in a.option_strings for a in p._actions)}
    assert set(found) == {"predict", "measure", "serve"}
    assert {a[5] for a in found.values()} == {DEVICES} and {a[3] for a in found.values()} == {"auto"}
    with pytest.raises(SystemExit) as info:
        main(["serve", "--out", "x", "--device", "gpu"])
    assert info.value.code == 2


def test_measure_and_serve_build_the_same_measure_options(tmp_path):
    shared = ["--cutoffs", "fearon2011", "--max-slices", "3", "--read-threads", "1", "--device", "cpu",
              "--no-hu-check", "--no-postprocess", "--clinical", "c.csv"]
    measure = build_parser().parse_args(["measure", "in", "--out", "o", *shared])
    serve = build_parser().parse_args(["serve", "--out", "o", *shared])
    a, b = _measure_options(measure), _measure_options(serve)
    assert a == b
    assert (a.composition.cutoffs, a.max_slices, a.read_threads, a.device, a.check_hu, a.postprocess,
            a.clinical_csv) == ("fearon2011", 3, 1, "cpu", False, False, "c.csv")


def test_cutoffs_option_changes_no_loaded_or_default_object(monkeypatch):
    from l3seg_lib import config

    loaded = Params()
    monkeypatch.setattr(config, "load_params", lambda path: loaded)
    args = build_parser().parse_args(["measure", "in", "--out", "o", "--params", "p.yaml", "--cutoffs", "fearon2011"])
    options = _measure_options(args)
    assert options.composition.cutoffs == "fearon2011"
    assert loaded.composition.cutoffs == "martin2013" and options.composition is not loaded.composition
    assert options.localize is loaded.localize
    assert CompositionConfig().cutoffs == "martin2013"


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"device": "gpu"}, "device (--device)"),
    ({"composition": CompositionConfig(cutoffs="martin2031")}, "unknown cut-off set 'martin2031'"),
    ({"max_slices": -1}, "max_slices (--max-slices)"),
    ({"read_threads": -2}, "read_threads (--read-threads)"),
    ({"workers": 1.5}, "workers (--workers)"),
    ({"max_inputs": -1}, "max_inputs"),
    ({"min_matrix": -8}, "min_matrix (--min-matrix)"),
    ({"min_fov_mm": math.nan}, "min_fov_mm (--min-fov-mm)"),
    ({"composition": {"cutoffs": "fearon2011"}}, "expected a CompositionConfig"),
])
def test_measure_options_check_themselves(kwargs, named):
    with pytest.raises(L3SegConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        MeasureOptions(**kwargs)


def test_measure_options_are_checked_again_when_replaced():
    options = MeasureOptions(device="cpu", read_threads=0, max_inputs=0, min_fov_mm=0)
    assert options.device == "cpu"
    with pytest.raises(L3SegConfigError, match="device"):
        replace(options, device="tpu")


def _node(tmp_path, **kw) -> NodeConfig:
    return NodeConfig(tmp_path / "node", "model.onnx", MeasureOptions(progress=False), **kw)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"ae_title": "A_TITLE_MUCH_TOO_LONG"}, "ae_title (--ae-title) 'A_TITLE_MUCH_TOO_LONG'"),
    ({"ae_title": "L3\\SEG"}, "backslash"),
    ({"ae_title": "    "}, "all spaces"),
    ({"ae_title": "L3SÉG"}, "ASCII"),
    ({"ae_title": "L3\x07SEG"}, "control characters"),
    ({"allow": ["SCANNER", "TOO_LONG_A_CALLING_AE"]}, "allow (--allow) 'TOO_LONG_A_CALLING_AE'"),
    ({"allow": "SCANNER"}, "expected a list of AE titles"),
    ({"port": 70000}, "port (--port)"),
    ({"port": -1}, "port (--port)"),
    ({"series_timeout": 0}, "series_timeout (--series-timeout): must be positive"),
    ({"series_timeout": math.inf}, "series_timeout (--series-timeout): must be positive"),
    ({"max_series_mb": -5}, "max_series_mb (--max-series-mb)"),
    ({"send_backoff": (10.0, 1.0)}, "send_backoff"),
    ({"host": ""}, "host (--host)"),
    ({"send_to": "PACS@127.0.0.1:104"}, "expected a Destination"),
    ({"tls": TLSFiles(cert="c.pem")}, "--tls-cert and --tls-key go together"),
    ({"tls": TLSFiles(ca="ca.pem")}, "--tls-cert and --tls-key go together"),
    ({"send_tls": TLSFiles(ca="ca.pem")}, "need --send-to"),
    ({"send_to": Destination("PACS", "127.0.0.1", 104), "send_tls": TLSFiles(key="k.pem")},
     "--send-tls-cert and --send-tls-key go together"),
    ({"tls": TLSFiles(cert="c.pem", key="k.pem")}, "c.pem: no such file (tls.cert, --tls-cert)"),
    ({"tls": "cert.pem"}, "expected TLSFiles or an ssl.SSLContext"),
])
def test_node_config_checks_itself(tmp_path, kwargs, named):
    """A library caller of NodeConfig gets the checks ``l3seg serve`` applies."""
    with pytest.raises(L3SegConfigError) as info:
        _node(tmp_path, **kwargs)
    assert named in str(info.value)


def test_a_valid_node_config_is_accepted_and_its_tls_files_must_exist(tmp_path):
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("not read before the node starts")
    files = TLSFiles(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    pacs = Destination("PACS", "127.0.0.1", 104)
    cfg = _node(tmp_path, ae_title=" L3SEG ", allow=["SCANNER"], port=0, send_to=pacs, tls=files,
                send_tls=TLSFiles(ca=tmp_path / "ca.pem"), max_series_mb=500)
    assert cfg.tls == files and cfg.send_to == pacs
    assert _node(tmp_path, allow=[]).allow == []  # no title listed: any
    with pytest.raises(L3SegConfigError, match="missing.pem: no such file"):
        _node(tmp_path, send_to=pacs, send_tls=TLSFiles(ca=tmp_path / "missing.pem"))


def test_destination_checks_itself():
    assert str(Destination("PACS", "::1", 104)) == "PACS@::1:104"
    for bad in (("X" * 17, "h", 104), ("PACS", "", 104), ("PACS", "h", 0), ("PACS", "h", 65536)):
        with pytest.raises(L3SegConfigError, match=r"send_to \(--send-to\)"):
            Destination(*bad)
    with pytest.raises(L3SegConfigError, match="backslash"):
        parse_destination("A\\B@host:104")  # the format holds; the AE title does not


def test_serve_reports_the_config_objects_errors_with_status_2(tmp_path, capsys):
    out = tmp_path / "node"
    assert main(["serve", "--out", str(out), "--port", "70000"]) == 2
    assert "port (--port)" in capsys.readouterr().err
    assert main(["serve", "--out", str(out), "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", "k.pem"]) == 2
    assert f"{tmp_path / 'c.pem'}: no such file" in capsys.readouterr().err
    assert main(["measure", str(tmp_path), "--out", str(tmp_path / "m"), "--read-threads", "-1"]) == 2
    assert "read_threads (--read-threads)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "m").exists()  # refused before anything is written

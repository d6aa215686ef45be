"""Pages and pictures people read: coarse CT pictures enlarged without smoothing, the localiser's
review picture and summary readable, the smoke-test banner on the run index, and "not computable"
where a table or a figure title would say NaN."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image


def test_readable_png_upsamples_coarse_pictures_with_nearest():
    from l3seg_lib.reporting.html import readable_png

    rgb = np.random.default_rng(0).integers(0, 255, (101, 122, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    data, factor = readable_png(buf.getvalue())
    big = np.asarray(Image.open(io.BytesIO(data)))
    assert factor == 6 and min(big.shape[:2]) >= 512
    assert np.array_equal(big[::factor, ::factor], rgb)  # nearest: the CT pixels themselves, no smoothing
    same, one = readable_png(data)
    assert one == 1 and same == data


def test_localizer_picture_is_readable_and_captioned():
    from l3seg_lib.imageio.ct import CTVolume
    from l3seg_lib.localize.l3 import L3Location
    from l3seg_lib.reporting.review import localizer_picture

    hu = np.full((40, 60, 60), -1000.0, dtype=np.float32)
    volume = CTVolume(hu=hu, patient_id="P", source="x", spacing_mm=(3.0, 3.0, 3.0))
    loc = L3Location(status="cannot tell", reason="the anchors disagree " * 12)
    picture = localizer_picture(volume, loc)
    assert picture.height >= 512


def test_localizer_summary_wraps_between_words_and_gives_the_voxel_size():
    from l3seg_lib.imageio.ct import CTVolume
    from l3seg_lib.localize.l3 import L3Location
    from l3seg_lib.reporting.review import summary_lines

    volume = CTVolume(hu=np.zeros((10, 8, 8), dtype=np.float32), patient_id="P", source="x", spacing_mm=(2.5, 0.8, 0.8))
    loc = L3Location(status="cannot tell", reason="the anchors disagree " * 12)
    lines = summary_lines(volume, loc, width=50)
    words = set(loc.summary().split())
    assert all(w in words for line in lines[:-1] for w in line.split())  # no word cut in two
    assert "0.80 x 0.80 mm" in lines[-1]


def test_run_index_shows_the_banner(tmp_path):
    from l3seg_lib.reporting.html import write_run_index_html

    page = write_run_index_html(tmp_path / "index.html", "r1", tmp_path / "p.yaml", tmp_path, "phantom", 1,
                                [("1. Data", "01.html")], smoke_test="smoke-test settings — numbers are not results")
    assert 'class="banner"' in page.read_text()
    plain = write_run_index_html(tmp_path / "plain.html", "r1", tmp_path / "p.yaml", tmp_path, "phantom", 1, [])
    assert 'class="banner"' not in plain.read_text()


def test_batch_index_says_not_computable_instead_of_nan(tmp_path):
    import pandas as pd

    from l3seg_lib.reporting.html import write_index_html
    from l3seg_lib.tissues import TISSUES

    nan = float("nan")
    validation = pd.DataFrame({**{f"dice_{t}": [nan, nan] for t in TISSUES},
                               **{f"area_err_{t}_cm2": [nan, nan] for t in TISSUES}})
    agreement = pd.DataFrame([{"tissue": t, "bias": nan, "loa_low": nan, "loa_high": nan, "n": 2} for t in TISSUES])
    meta = {"cutoff_set": "x", "cutoff_description": "x", "model": "m", "citations": "c"}
    page = write_index_html(tmp_path / "index.html", pd.DataFrame(columns=["patient_id"]), pd.DataFrame(), validation,
                            agreement, meta).read_text()
    text = re.sub(r"<style.*?</style>|<[^>]*>", " ", page, flags=re.S)
    assert not re.search(r"\bnan\b", text, re.I)
    assert "not computable with n = 2" in page


def test_area_agreement_titles_never_say_nan():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from l3seg_lib.reporting.figures import area_agreement
    from l3seg_lib.tissues import TISSUES

    df = pd.DataFrame({**{f"area_pred_{t}_cm2": [1.0] for t in TISSUES}, **{f"area_true_{t}_cm2": [1.5] for t in TISSUES}})
    fig = area_agreement(df)
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert not any(re.search(r"\bnan\b", t, re.I) for t in titles)
    assert "r not computable with n = 1" in titles[0]

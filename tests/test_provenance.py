import json

import pytest

from cxrnb.provenance import Provenance


def test_line_states_source_count_size_epochs_and_seed(tmp_path):
    p = Provenance("real CXR14 subset", 1657, 64, epochs=3, seed=1, extra={"preset": "LSGAN"})
    line = p.line()
    for part in ("data: real CXR14 subset", "1,657 images", "64px", "epochs: 3", "seed 1",
                 "preset: LSGAN"):
        assert part in line
    assert "label table only" in Provenance("full CXR14", 112120, 0).line()
    saved = json.loads(p.save_json(tmp_path / "fig.png").read_text())
    assert saved["n_images"] == 1657 and saved["extra"] == {"preset": "LSGAN"}
    assert (tmp_path / "fig.json").is_file()


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown data source"):
        Provenance("my laptop", 1, 64)

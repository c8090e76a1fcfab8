"""The one id-list parser behind `extract --videos` and `predict --videos`."""
from __future__ import annotations

import pytest

from affcli.common.ids import parse_id_list


def test_comma_list_items_and_file(tmp_path):
    assert parse_id_list(" a, b,,a ,c ") == ["a", "b", "c"]
    assert parse_id_list(["x,y", "z", "x"]) == ["x", "y", "z"]
    f = tmp_path / "ids.txt"
    f.write_text("v1\n# a comment\nv2, v3  # trailing\n\nv1\n")
    assert parse_id_list(str(f)) == parse_id_list(f) == ["v1", "v2", "v3"]
    with pytest.raises(ValueError, match="is not a file"):
        parse_id_list(tmp_path / "missing.txt")


"""load_byterec reports the first problem in file order, whatever its kind."""
import pytest

import mmoe_annotated as mm

GOOD = "\t".join(["1", "2", "3", "4", "5", "0", "1", "0", "-1", "6", "53085000000", "9"])


def _write(tmp_path, rows):
    p = tmp_path / "f.txt"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_bad_value_before_malformed_line_is_reported_first(tmp_path):
    rows = [GOOD] * 6
    rows[1] = GOOD.replace("\t9", "\tabc")          # line 2: bad duration
    rows[4] = "\t".join(GOOD.split("\t")[:-1])     # line 5: 11 columns
    with pytest.raises(mm.DataError) as err:
        mm.load_byterec(_write(tmp_path, rows))
    assert (err.value.line, err.value.column) == (2, "duration_time")


def test_malformed_line_before_bad_value_is_reported_first(tmp_path):
    rows = [GOOD] * 6
    rows[1] = "\t".join(GOOD.split("\t")[:-1])     # line 2: 11 columns
    rows[4] = GOOD.replace("\t9", "\tabc")          # line 5: bad duration
    with pytest.raises(mm.DataError, match="has 11 tab-separated columns") as err:
        mm.load_byterec(_write(tmp_path, rows))
    assert err.value.line == 2


def test_skip_mode_still_lists_both(tmp_path):
    rows = [GOOD] * 6
    rows[1] = GOOD.replace("\t9", "\tabc")
    rows[4] = "\t".join(GOOD.split("\t")[:-1])
    with pytest.warns(UserWarning, match="skipped 2 bad line"):
        df = mm.load_byterec(_write(tmp_path, rows), on_bad_lines="skip")
    assert len(df) == 4
    assert [n for n, _ in df.attrs["bad_lines"]] == [2, 5]

"""The restricted unpickler: only lists/tuples of strings load; nothing in a pickle is ever executed."""

import os
import pickle

import pytest

from t2icli.data.format import DataError
from t2icli.data.safe_pickle import load_string_list, loads_string_list


class _Evil:
    """Unpickling this with the standard pickle would run `touch <marker>`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "filenames.pickle"
    for payload in ([_Evil(marker)], _Evil(marker), ["ok", _Evil(marker)]):
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(DataError) as info:
            load_string_list(path)
        msg = str(info.value)
        assert str(path) in msg and "system" in msg and "refused" in msg
        assert not marker.exists()


@pytest.mark.parametrize("obj", [{"a": "b"}, [1, 2, 3], ["a", 2], 7, "just a string", [["nested"]], None])
def test_other_types_are_refused(tmp_path, obj):
    path = tmp_path / "x.pickle"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match="expected a pickled list of strings") as info:
        load_string_list(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_list_or_tuple_of_str_is_accepted(tmp_path, protocol):
    names = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111", "002.Laysan_Albatross/x", "é"]
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps(names, protocol=protocol))
    assert load_string_list(path) == names
    path.write_bytes(pickle.dumps(tuple(names), protocol=protocol))
    assert load_string_list(path) == names


def test_python2_byte_strings_are_read_as_latin1():
    # What Python 2 writes for pickle.dump(['abc', 'd\xe9'], f, 2): SHORT_BINSTRING opcodes.
    data = b"\x80\x02]q\x00(U\x03abcq\x01U\x02d\xe9q\x02e."
    assert loads_string_list(data) == ["abc", "dé"]
    # The same with Python 2's default protocol 0 (STRING opcodes).
    data = b"(lp0\nS'abc'\np1\naS'd\\xe9'\np2\na."
    assert loads_string_list(data) == ["abc", "dé"]


def test_python3_bytes_need_a_global_and_are_refused():
    with pytest.raises(DataError, match="refused"):
        loads_string_list(pickle.dumps([b"abc"], protocol=2), name="f.pickle")


def test_garbage_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="g.pickle"):
        loads_string_list(b"this is not a pickle", name="g.pickle")
    with pytest.raises(DataError, match="g.pickle"):
        loads_string_list(pickle.dumps(["a", "b"])[:-3], name="g.pickle")
    with pytest.raises(DataError, match="nope.pickle"):
        load_string_list(tmp_path / "nope.pickle")

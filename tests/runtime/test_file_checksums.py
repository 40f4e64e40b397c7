"""Size and SHA-256 records of files: every kind of difference is found, cheapest first."""

import hashlib
import os

from rso_jax.runtime import atomic_io, file_checksums


def make_files(root):
    (root / "sub").mkdir()
    (root / "a.bin").write_bytes(b"alpha")
    (root / "sub" / "b.bin").write_bytes(b"beta" * 1000)
    (root / "skipped").write_text("not recorded")
    return ["a.bin", os.path.join("sub", "b.bin")]


def test_a_record_holds_each_file_s_size_and_sha256(tmp_path):
    names = make_files(tmp_path)
    assert file_checksums.record(str(tmp_path), names) == {
        "a.bin": {"bytes": 5, "sha256": hashlib.sha256(b"alpha").hexdigest()},
        os.path.join("sub", "b.bin"): {"bytes": 4000,
                                       "sha256": hashlib.sha256(b"beta" * 1000).hexdigest()}}


def test_files_below_leave_out_excluded_top_level_names_and_interrupted_writes(tmp_path):
    make_files(tmp_path)
    (tmp_path / "sub" / "skipped").write_text("only the top level is excluded")
    (tmp_path / ".c.bin.partial-1234").write_text("a write killed before its rename")
    assert atomic_io.is_leftover(".c.bin.partial-1234")
    assert file_checksums.files_below(str(tmp_path), excluded={"skipped"}) == [
        "a.bin", os.path.join("sub", "b.bin"), os.path.join("sub", "skipped")]


def test_unchanged_files_have_no_mismatch(tmp_path):
    names = make_files(tmp_path)
    recorded = file_checksums.record(str(tmp_path), names)
    assert list(file_checksums.mismatches(str(tmp_path), recorded, "the save", names)) == []


def test_each_kind_of_change_is_named_with_its_file(tmp_path):
    names = make_files(tmp_path)
    recorded = file_checksums.record(str(tmp_path), names)
    (tmp_path / "a.bin").write_bytes(b"alphx")  # same size, other bytes
    os.remove(tmp_path / "sub" / "b.bin")
    (tmp_path / "new.bin").write_text("added")
    present = file_checksums.files_below(str(tmp_path), excluded={"skipped"})
    assert list(file_checksums.mismatches(str(tmp_path), recorded, "the save", present)) == [
        f"{tmp_path}/new.bin is not among the files the save wrote",
        f"{tmp_path}/sub/b.bin is missing",
        f"{tmp_path}/a.bin is not what the save wrote (its SHA-256 differs)"]
    (tmp_path / "a.bin").write_bytes(b"alpha!")
    assert list(file_checksums.mismatches(str(tmp_path), recorded, "the stage")) == [
        f"{tmp_path}/a.bin has 6 bytes; the stage wrote 5", f"{tmp_path}/sub/b.bin is missing"]


def test_the_first_mismatch_is_found_without_hashing_what_need_not_be(tmp_path, monkeypatch):
    names = make_files(tmp_path)
    recorded = file_checksums.record(str(tmp_path), names)
    (tmp_path / "sub" / "b.bin").write_bytes(b"short")
    hashed = []
    real_sha256 = file_checksums.file_sha256
    monkeypatch.setattr(file_checksums, "file_sha256",
                        lambda path: hashed.append(path) or real_sha256(path))
    first = next(file_checksums.mismatches(str(tmp_path), recorded, "the save"))
    assert first == f"{tmp_path}/sub/b.bin has 5 bytes; the save wrote 4000"
    assert hashed == []  # a file of another size is found before any file is hashed

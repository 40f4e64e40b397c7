"""Damage done to files in the tests, as a failing disk or a bad copy would do it."""


def flip_bytes(path, start=100, stop=400):
    """XORs bytes start..stop-1 of a file with 1, in place: the size stays."""
    with open(path, "r+b") as stream:
        stream.seek(start)
        flipped = bytes(byte ^ 1 for byte in stream.read(stop - start))
        stream.seek(start)
        stream.write(flipped)

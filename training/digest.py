"""The tensor digest of a safetensors weights file: a SHA-256 that names the weights themselves.

The file's own SHA-256 changes whenever its metadata does (the commit and time it was written, its provenance), so
two writes of the same weights differ. The tensor digest covers only the tensors (names, dtypes, shapes and
bytes): the model card and the ship tests name weights by it, and evaluate.py records it in each report so a
report can be matched to the file that produced it. It needs only the standard library.
"""
import hashlib
import json


def tensor_digest(path):
    """SHA-256 over a safetensors file's tensors alone: each tensor's name, dtype and shape (sorted by name) and its
    stored bytes, leaving out the `__metadata__` block (commit, time, provenance)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, too short for a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header of {n} bytes runs past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    h = hashlib.sha256()
    for name in sorted(k for k in header if k != "__metadata__"):
        entry = header[name]
        start, end = entry["data_offsets"]
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"{path}: {name} lies outside the file's data ({start}..{end} of {len(data)} bytes)")
        h.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
        h.update(data[start:end])
    return h.hexdigest()

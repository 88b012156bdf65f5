#!/usr/bin/env python3
"""Build the compact QM9 file the trainer reads, from the PyPI package `qm9pack`.

Output (`training/data/qm9_compact.npz`, about 30 MB, generated, never committed):
  positions  float32 [A, 3]   Angstrom, each molecule centred on its mean position
  types      uint8   [A]      0..4 = H, C, N, O, F
  offsets    int64   [M + 1]  atoms of molecule m are rows offsets[m]:offsets[m+1]
  index      int64   [M]      GDB-9 index of each molecule (provenance)
  train, valid, test  int64   molecule ids of the split

Split: numpy's legacy generator, `np.random.seed(0)`, `perm = np.random.permutation(M)`, then the first
100,000 ids are train, the next 17,748 valid, the next 13,083 test (EDM's recipe, ../shared/edm-spec.md §3,
applied to the package's row order).

`--smiles` additionally writes `training/data/train_smiles.txt`: the canonical SMILES of every training molecule
built with the EDM pipeline (bonds from distances, RDKit sanitisation, largest fragment), for the novelty metric.
"""
import argparse
import os
import re
import sys
import time

import numpy as np

ELEMENTS = ["H", "C", "N", "O", "F"]
N_TRAIN, N_VALID, N_TEST = 100_000, 17_748, 13_083
FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
HERE = os.path.dirname(os.path.abspath(__file__))


def csv_files():
    import qm9pack

    root = os.path.join(os.path.dirname(qm9pack.__file__), "data")
    files = sorted(f for f in os.listdir(root) if f.startswith("qm9_part") and f.endswith(".csv"))
    if len(files) != 3:
        sys.exit(f"expected qm9_part1..3.csv in {root}, found {files}")
    return [os.path.join(root, f) for f in files]


def parse(files):
    import csv

    csv.field_size_limit(1 << 30)
    pos, typ, offs, index = [], [], [0], []
    for path in files:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                elems = re.findall(r"[A-Za-z]+", row["Elements"])
                nums = [float(v) for v in FLOAT.findall(row["XYZ_Ang"].replace("*^", "e"))]
                if len(nums) != 3 * len(elems):
                    raise ValueError(f"molecule {row['Index']}: {len(elems)} atoms but {len(nums)} coordinates")
                xyz = np.asarray(nums, dtype=np.float64).reshape(-1, 3)
                xyz -= xyz.mean(axis=0)
                pos.append(xyz.astype(np.float32))
                typ.append(np.asarray([ELEMENTS.index(e) for e in elems], dtype=np.uint8))
                offs.append(offs[-1] + len(elems))
                index.append(int(row["Index"]))
    return np.concatenate(pos), np.concatenate(typ), np.asarray(offs, np.int64), np.asarray(index, np.int64)


def split(m):
    np.random.seed(0)
    perm = np.random.permutation(m)
    a, b, c = N_TRAIN, N_TRAIN + N_VALID, N_TRAIN + N_VALID + N_TEST
    if c != m:
        sys.exit(f"expected {c} molecules, found {m}")
    return perm[:a], perm[a:b], perm[b:c]


def write_smiles(data, out):
    from chem import molecule_smiles  # local module, shares the EDM bond rule with evaluate.py

    pos, typ, offs = data["positions"], data["types"], data["offsets"]
    smiles = []
    for m in data["train"]:
        s = molecule_smiles(pos[offs[m]:offs[m + 1]], typ[offs[m]:offs[m + 1]])
        if s is not None:
            smiles.append(s)
    with open(out, "w") as fh:
        fh.write("\n".join(smiles) + "\n")
    print(f"wrote {len(smiles)} training SMILES ({len(set(smiles))} unique) to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "data", "qm9_compact.npz"))
    ap.add_argument("--smiles", action="store_true", help="also write data/train_smiles.txt (needs rdkit)")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if not os.path.exists(args.out):
        t0 = time.time()
        pos, typ, offs, index = parse(csv_files())
        train, valid, test = split(len(index))
        tmp = args.out + ".tmp.npz"
        np.savez(tmp, positions=pos, types=typ, offsets=offs, index=index, train=train, valid=valid, test=test)
        os.replace(tmp, args.out)
        counts = np.bincount(typ, minlength=5)
        print(f"{len(index)} molecules, {len(typ)} atoms ({dict(zip(ELEMENTS, counts.tolist()))}) "
              f"in {time.time() - t0:.1f}s -> {args.out}")
    else:
        print(f"{args.out} exists; delete it to rebuild")
    if args.smiles:
        sys.path.insert(0, HERE)
        write_smiles(np.load(args.out), os.path.join(os.path.dirname(args.out), "train_smiles.txt"))


if __name__ == "__main__":
    main()

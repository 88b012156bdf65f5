"""EDM's chemistry rules (spec §4) in Python: bond order from distance, stability, RDKit molecule and SMILES.

Used by prepare_data.py (training SMILES for novelty) and evaluate.py (validity, uniqueness, novelty). The Rust crate
has its own implementation of the same rule (src/chemistry); evaluate.py cross-checks both on the same samples.
"""
import collections

import numpy as np

ELEMENTS = ["H", "C", "N", "O", "F"]
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
BONDS1 = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142},
}
BONDS2 = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121, ("O", "O"): 121}
BONDS3 = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
# pm added to each order's reference length to make its threshold (spec §4.1)
MARGIN = {1: 10, 2: 5, 3: 3}
SYMBOL = {1: "-", 2: "=", 3: "#"}

# an atom whose bond orders sum above its valence, and why (see over_bonded)
OverBonded = collections.namedtuple("OverBonded", "element cause margin bond")


def _pair(table, a, b):
    return table.get((a, b), table.get((b, a)))


def bond_order(a, b, d):
    """a, b element symbols, d distance in Angstrom -> 0..3 (spec §4.1, margins 10/5/3 pm, strict <)."""
    D = 100.0 * d
    if D < BONDS1[a][b] + MARGIN[1]:
        b2 = _pair(BONDS2, a, b)
        if b2 is not None and D < b2 + MARGIN[2]:
            b3 = _pair(BONDS3, a, b)
            return 3 if (b3 is not None and D < b3 + MARGIN[3]) else 2
        return 1
    return 0


def bond_label(a, b, order):
    """"C=O" for a C-O double bond: the elements in C N O F H order (so "C-H", "N-H"), joined by - = or #."""
    a, b = sorted((a, b), key="CNOFH".index)
    return f"{a}{SYMBOL[order]}{b}"


def bond_counts(types, bs):
    """Counter of bond labels ("C-H", "C=O", ...) over the bonds `bs` of one molecule."""
    return collections.Counter(bond_label(ELEMENTS[types[i]], ELEMENTS[types[j]], o) for i, j, o in bs)


def bonds(pos, types):
    """All (i, j, order>0) with i < j. pos [n,3] float32, types [n] ints 0..4."""
    pos = np.asarray(pos, dtype=np.float32)
    out = []
    for i in range(len(types)):
        for j in range(i + 1, len(types)):
            d = float(np.linalg.norm(pos[i] - pos[j]))
            o = bond_order(ELEMENTS[types[i]], ELEMENTS[types[j]], d)
            if o:
                out.append((i, j, o))
    return out


def stability(pos, types, bs=None):
    """(stable atoms, atoms, molecule stable) by spec §4.2. `bs`: the molecule's bonds, when already computed."""
    total = np.zeros(len(types), dtype=int)
    for i, j, o in bonds(pos, types) if bs is None else bs:
        total[i] += o
        total[j] += o
    ok = [total[k] == VALENCE[ELEMENTS[t]] for k, t in enumerate(types)]
    return int(sum(ok)), len(types), all(ok)


def _rdkit_molecule(pos, types, bs=None):
    """The unsanitised RDKit molecule of spec §4.3: atoms, and bonds from the distance rule."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.RWMol()
    for t in types:
        mol.AddAtom(Chem.Atom(ELEMENTS[int(t)]))
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for i, j, o in bonds(pos, [int(t) for t in types]) if bs is None else bs:
        mol.AddBond(i, j, kinds[o])
    return mol


def rdkit_verdict(pos, types, bs=None):
    """RDKit's verdict on one molecule (spec §4.3), sanitising it once: `(smiles, None)` with the canonical SMILES
    of the largest fragment when it sanitises, else `(None, reason)`. The reason reads "N valence 4" for an atom
    with more bonds (by order) than RDKit allows uncharged, else it is RDKit's message; it is for reading
    evaluation results, not a metric."""
    import re

    from rdkit import Chem

    mol = _rdkit_molecule(pos, types, bs)
    try:
        Chem.SanitizeMol(mol)
    except ValueError as e:
        m = re.search(r"atom # ?\d+ (\w+), (\d+), is greater than permitted", str(e))
        if m:
            return None, f"{m.group(1)} valence {m.group(2)}"
        return None, (str(e).strip().splitlines() or ["sanitisation failed"])[0][:80]
    frags = Chem.rdmolops.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    return Chem.MolToSmiles(largest), None


def molecule_smiles(pos, types):
    """Canonical SMILES of the largest fragment, or None when RDKit sanitisation fails (spec §4.3)."""
    return rdkit_verdict(pos, types)[0]


def _threshold(order, a, b):
    """The distance (Angstrom) below which a bond of this order counts (bond_order's rule)."""
    ref = BONDS1[a][b] if order == 1 else _pair(BONDS2 if order == 2 else BONDS3, a, b)
    return (ref + MARGIN[order]) / 100.0


def over_bonded(pos, types, bs=None):
    """Why atoms break the valence rule (spec §4.2): one `OverBonded(element, cause, margin, bond)` per atom whose
    bond orders sum above its valence. `cause` is "neighbours" when it has more bonded neighbours than its
    valence, else "order": the neighbour count fits but a bond counts double or triple. `margin` (Angstrom, >= 0)
    is how far the bond nearest its threshold lies inside it: the single-bond threshold for "neighbours" (that
    bond `margin` longer and the extra neighbour is gone), the double or triple one for "order" (that bond
    `margin` longer counts one order lower). `bond` labels that bond, e.g. "C=N"."""
    pos = np.asarray(pos, dtype=np.float32)
    neighbours = [[] for _ in types]
    for i, j, o in bonds(pos, types) if bs is None else bs:
        d = float(np.linalg.norm(pos[i] - pos[j]))
        neighbours[i].append((ELEMENTS[types[j]], o, d))
        neighbours[j].append((ELEMENTS[types[i]], o, d))
    out = []
    for k, t in enumerate(types):
        el = ELEMENTS[t]
        if sum(o for _, o, _ in neighbours[k]) <= VALENCE[el]:
            continue
        if len(neighbours[k]) > VALENCE[el]:
            cause, candidates = "neighbours", [(_threshold(1, el, other) - d, other, o)
                                               for other, o, d in neighbours[k]]
        else:
            cause, candidates = "order", [(_threshold(o, el, other) - d, other, o)
                                          for other, o, d in neighbours[k] if o >= 2]
        margin, other, o = min(candidates)
        out.append(OverBonded(el, cause, margin, bond_label(el, other, o)))
    return out

"""The hostile-input suite (scripts/hostile_input.py) keeps working, and a sample of its
in-process attacks, one in every few of each class, still holds."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_a_sample_of_every_in_process_attack_class_holds(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import hostile_input as suite

    suite.BASE = suite.make_base(tmp_path)
    attacks = suite.attacks_for(tmp_path, quick=True, fuzz=20, seed=0)
    classes = {a.cls for a in attacks}
    assert len(classes) >= 8 and len(attacks) >= 300
    sample = [a for c in sorted(classes) for a in [x for x in attacks if x.cls == c][::12]]
    rows = suite.run_attacks(sample, tmp_path)
    assert {r["class"] for r in rows} == classes
    broke = [f"{r['class']}: {r['attack']}: {r['detail']}" for r in rows if not suite.held(r)]
    assert broke == []
    assert "| **total** |" in suite.table(rows)

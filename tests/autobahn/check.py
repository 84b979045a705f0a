#!/usr/bin/env python3
"""Fails unless every Autobahn case of the selected sections passed for an agent.

wstest exits 0 even when cases fail, so its index.json is the verdict: a case passes when
`behavior` is OK, NON-STRICT or INFORMATIONAL and `behaviorClose` is OK or INFORMATIONAL.

usage: check.py INDEX_JSON AGENT SECTION [SECTION...]
"""
import json
import sys
from collections import defaultdict

BEHAVIOR_OK = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_OK = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def main(argv):
    if len(argv) < 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path, agent, sections = argv[1], argv[2], {int(s) for s in argv[3:]}
    with open(path) as f:
        index = json.load(f)
    if agent not in index:
        print(f"autobahn: no results for agent {agent!r} in {path} (have {sorted(index)})")
        return 1
    passed = defaultdict(int)
    total = defaultdict(int)
    failures = []
    verdicts = defaultdict(int)
    for case_id, result in sorted(index[agent].items(), key=lambda kv: case_key(kv[0])):
        section = case_key(case_id)[0]
        if section not in sections:
            continue
        total[section] += 1
        verdicts[(result.get("behavior"), result.get("behaviorClose"))] += 1
        ok = result.get("behavior") in BEHAVIOR_OK and result.get("behaviorClose") in CLOSE_OK
        if ok:
            passed[section] += 1
        else:
            failures.append(
                f"  {case_id}: behavior {result.get('behavior')}, "
                f"close {result.get('behaviorClose')} ({result.get('reportfile')})"
            )
    status = 0
    for section in sorted(sections):
        if total[section] == 0:
            print(f"section {section}: no cases ran")
            status = 1
        else:
            print(f"section {section}: {passed[section]}/{total[section]} passed")
    print(f"{agent}: {sum(passed.values())}/{sum(total.values())} cases passed")
    for (behavior, close), n in sorted(verdicts.items(), key=lambda kv: -kv[1]):
        print(f"  {n} x behavior {behavior}, close {close}")
    if failures:
        print("failed cases:")
        print("\n".join(failures))
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))

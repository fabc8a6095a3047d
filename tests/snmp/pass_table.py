#!/usr/bin/env python3
"""An snmpd `pass` program serving a table of OIDs from a JSON file.

snmpd runs it as `pass_table.py TABLE.json -g OID` (get) or `-n OID` (get-next) and reads
three lines back: OID, type, value. The test rewrites the JSON to change what the "device"
reports (a disk fails, an array degrades) while snmpd keeps running.
"""

import json
import sys


def key(oid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in oid.strip(".").split("."))


def main() -> None:
    table_path, mode, oid = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(table_path) as handle:
        table = {key(k): v for k, v in json.load(handle).items()}
    wanted = key(oid)
    if mode == "-g":
        found = wanted if wanted in table else None
    else:
        found = next((k for k in sorted(table) if k > wanted), None)
    if found is None:
        return
    kind, value = table[found]
    print("." + ".".join(map(str, found)))
    print(kind)
    print(value)


if __name__ == "__main__":
    main()

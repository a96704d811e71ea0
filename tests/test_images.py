"""Container-image functions (PackageType Image), against the real server and real sandboxes.

Images are built without Docker (tests/oci_images.py writes OCI layouts: a static busybox and a shell
bootstrap that speaks the Runtime API) and read from a layout on disk or, pushed with skopeo, from Debian's
docker-registry started on loopback. Hostile images (paths out of the root, symlink escapes, setuid files,
device nodes, links to files that are not there, decompression bombs, missing blobs, malformed configs)
leave their function Failed or contained, write nothing outside the images dir, and cost a bystander nothing.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kindling.images.unpack import Budget, InvalidImage, Root, apply_layer, finish
from tests.adversarial import Bystander
from tests.conftest import ROLE, Server, delete_functions, free_port, make_zip, unique
from tests.oci_images import busybox_image, busybox_layer, index_layout, info, layer, write_layout

ECR = "000000000000.dkr.ecr.us-east-1.amazonaws.com"  # mapped to OCI layouts on disk
PUSHED = "111111111111.dkr.ecr.us-east-1.amazonaws.com"  # mapped to the docker-registry on loopback
MAX_MB = 32
SENTINEL = f"kindling-escape-{uuid.uuid4().hex[:8]}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("skopeo"),
                                reason="container images need root (isolated sandboxes) and skopeo")


def _bomb_layer() -> bytes:
    """A gzip layer whose single file inflates to 3x the image limit (about 100 KB compressed)."""
    size = 3 * MAX_MB << 20
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        ti = info("bomb", size=size)
        gz.write(ti.tobuf(tarfile.PAX_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(size >> 20):
            gz.write(zeros)
        gz.write(bytes(1024))
    return raw.getvalue()


@pytest.fixture(scope="module")
def layouts() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kindling-images-") as tmp:
        root = Path(tmp)
        busybox_image(root / "hello")
        busybox_image(root / "hello", "v2", config={"Env": ["PATH=/bin", "IMAGE_VAR=v2", "SHARED=image"]})
        busybox_image(root / "gc", config={"Env": ["PATH=/bin", "IMAGE_VAR=gc"]})
        busybox_image(root / "many", config={"Env": ["PATH=/bin", "IMAGE_VAR=many"]})
        contained = layer({
            "/abs.txt": b"an absolute path lands inside the root",
            "tmp": info("tmp", tarfile.SYMTYPE, linkname="/"),  # a mount point made a link: replaced
            "etc/": info("etc", tarfile.DIRTYPE, 0o755),
            "etc/resolv.conf": info("etc/resolv.conf", tarfile.SYMTYPE, linkname="/etc/shadow"),
            "escape": info("escape", tarfile.SYMTYPE, linkname="/"),
            f"escape/{SENTINEL}-abs": b"through an absolute link: inside the root",
            "up": info("up", tarfile.SYMTYPE, linkname="../../../../../../../../.."),
            f"up/{SENTINEL}-up": b"through a link upwards: inside the root",
            "app/suid": info("app/suid", mode=0o4755),
            "app/dev-null": info("app/dev-null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3),
        })
        busybox_image(root / "contained", extra_layers=[contained])
        failing = {
            "dotdot": [layer({f"../../../../{SENTINEL}-dotdot": b"out"})],
            "whiteout": [layer({"../../.wh.etc": b""})],
            "whiteout-parent": [layer({".wh..": b""})],  # would empty the folder above the root
            "deep": [layer({"d/" * 200 + "f": b"deep"})],
            "hardlink": [layer({"app/shadow": info("app/shadow", tarfile.LNKTYPE, linkname="/etc/shadow")})],
            "bomb": [_bomb_layer()],
            "bigblob": [gzip.compress(os.urandom((MAX_MB + 2) << 20), compresslevel=1)],  # stopped while copied
            "notar": [gzip.compress(b"this is not a tar archive " * 100)],
        }
        for name, extra in failing.items():
            busybox_image(root / name, extra_layers=extra)
        write_layout(root / "badconfig", "latest", [busybox_layer()], b"{this is not json")
        write_layout(root / "badentry", "latest", [busybox_layer()], {"Entrypoint": "/bin/sh -c oops"})
        write_layout(root / "hugeenv", "latest", [busybox_layer()], {"Env": [f"V{i}={'x' * 1000}" for i in range(40)]})
        amd64 = busybox_image(root / "multi", "amd64-only")
        manifest_type = "application/vnd.oci.image.manifest.v1+json"
        index_layout(root / "multi", "latest", [
            {"mediaType": manifest_type, "digest": "sha256:" + "a" * 64, "size": 100,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": manifest_type, "digest": f"sha256:{amd64}", "size": 100,
             "platform": {"os": "linux", "architecture": "amd64"}}])
        traversal = f"../../../../../../../../../tmp/{SENTINEL}-index".ljust(64, "x")
        index_layout(root / "multi", "escape", [
            {"mediaType": manifest_type, "digest": f"sha256:{traversal}", "size": 100,
             "platform": {"os": "linux", "architecture": "amd64"}}])
        missing = root / "missing"
        busybox_image(missing)
        manifest = json.loads((missing / "index.json").read_text())["manifests"][0]["digest"][7:]
        layer_digest = json.loads((missing / "blobs/sha256" / manifest).read_text())["layers"][0]["digest"][7:]
        (missing / "blobs/sha256" / layer_digest).unlink()
        yield root


@pytest.fixture(scope="module")
def registry(layouts: Path) -> Iterator[int]:
    """Debian's docker-registry on 127.0.0.1 (a free port), with hello:latest pushed to it by skopeo."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry (Debian package) is not installed: make installs it")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kindling-registry-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {tmp}/data\nhttp:\n  addr: 127.0.0.1:{port}\n")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                                  f"oci:{layouts / 'hello'}:latest", f"docker://127.0.0.1:{port}/team/hello:latest"],
                                 capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, "docker-registry did not start"
                time.sleep(0.1)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="module")
def hostile_server(layouts: Path, registry: int) -> Iterator[Server]:
    """This module's server: images from the layouts and the registry, a small image limit."""
    with tempfile.TemporaryDirectory(prefix="kindling-images-srv-") as tmp:
        srv = Server(Path(tmp) / "data", image_sources=f"{ECR}=oci:{layouts},{PUSHED}=http://127.0.0.1:{registry}",
                     image_max_mb=str(MAX_MB)).start()
        yield srv
        srv.stop()


@pytest.fixture
def lam(hostile_server: Server):  # noqa: ANN201 - a botocore client
    return hostile_server.client()


@pytest.fixture
def image_function(lam):  # noqa: ANN001, ANN201
    made: list[str] = []

    def create(uri: str, **kwargs: object) -> dict:
        out = lam.create_function(FunctionName=unique("img"), PackageType="Image", Role=ROLE,
                                  Code={"ImageUri": uri}, **kwargs)
        made.append(out["FunctionName"])
        return out

    yield create
    delete_functions(lam, made)


def settled(lam, name: str, timeout: float = 30) -> dict:  # noqa: ANN001
    """The configuration once the function is no longer Pending nor InProgress."""
    deadline = time.monotonic() + timeout
    while True:
        c = lam.get_function_configuration(FunctionName=name)
        if c["State"] != "Pending" and c.get("LastUpdateStatus") != "InProgress":
            return c
        assert time.monotonic() < deadline, c
        time.sleep(0.05)


def invoke(lam, name: str, payload: dict | None = None) -> dict:  # noqa: ANN001
    out = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode())
    assert "FunctionError" not in out, out["Payload"].read()
    return json.loads(out["Payload"].read())


def digest_of(layout: Path, tag: str = "latest") -> str:
    index = json.loads((layout / "index.json").read_text())
    return next(m["digest"][7:] for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == tag)


def test_an_image_function_runs_with_the_images_entrypoint_cmd_env_and_workdir(lam, image_function, layouts):
    # Given an image with ENTRYPOINT sh /app/bootstrap.sh, CMD handler.main extra-arg, ENV and WORKDIR /app
    uri = f"{ECR}/hello:latest"
    digest = digest_of(layouts / "hello")
    # When it is created (with a variable the image sets too) and invoked
    out = image_function(uri, Environment={"Variables": {"SHARED": "function"}})
    # Then CreateFunction answers as AWS: Pending, the manifest digest as CodeSha256, no Runtime or Handler
    assert out["State"] == "Pending" and out["StateReasonCode"] == "Creating" and out["PackageType"] == "Image"
    assert out["CodeSha256"] == digest and out["CodeSize"] == 0
    assert not {"Runtime", "Handler", "RuntimeVersionConfig", "ImageConfigResponse"} & out.keys()
    config = settled(lam, out["FunctionName"])
    assert config["State"] == "Active" and config["LastUpdateStatus"] == "Successful"
    got = lam.get_function(FunctionName=out["FunctionName"])
    assert got["Code"] == {"RepositoryType": "ECR", "ImageUri": uri,
                           "ResolvedImageUri": f"{ECR}/hello@sha256:{digest}"}
    seen = invoke(lam, out["FunctionName"], {"n": 1})
    # ... ENTRYPOINT + CMD is the command, CMD[0] is _HANDLER, WORKDIR the working directory
    assert seen["argv"] == "/app/bootstrap.sh handler.main extra-arg"
    assert seen["handler"] == "handler.main" and seen["cwd"] == "/app" and seen["event"] == {"n": 1}
    # ... the image's ENV under Lambda's and the function's own; an unprivileged user as on Lambda
    assert seen["image_var"] == "from-image" and seen["shared"] == "function" and seen["path"] == "/bin"
    assert seen["region"] == "us-east-1" and seen["task_root"] == "/var/task" and seen["uid"] == "993"
    # ... the image's root is read-only, /tmp the environment's own, a whiteout removed the lower layer's file
    assert seen["root_writable"] == "no" and seen["tmp_writable"] == "yes" and seen["old"] == "no"
    assert seen["tmp_mode"] == "700" and seen["resolv"] == "regular file"
    # ... and mountinfo shows the image's root on the code store's filesystem, not a host path of the data dir
    assert seen["root_mount"] == f"/.images/{digest}/rootfs"


def test_image_config_overrides_the_images_settings(lam, image_function):
    # Given ImageConfig overriding all three (an EntryPoint found on the image's PATH)
    ic = {"EntryPoint": ["sh", "/app/bootstrap.sh"], "Command": ["other.handler"], "WorkingDirectory": "/bin"}
    out = image_function(f"{ECR}/hello:latest", ImageConfig=ic)
    assert out["ImageConfigResponse"] == {"ImageConfig": ic}
    settled(lam, out["FunctionName"])
    seen = invoke(lam, out["FunctionName"])
    assert (seen["argv"], seen["handler"], seen["cwd"]) == ("/app/bootstrap.sh other.handler", "other.handler", "/bin")
    # When UpdateFunctionConfiguration changes only the Command
    up = lam.update_function_configuration(FunctionName=out["FunctionName"], ImageConfig={"Command": ["third.h"]})
    assert up["ImageConfigResponse"] == {"ImageConfig": {"Command": ["third.h"]}}
    settled(lam, out["FunctionName"])
    # Then the image's own ENTRYPOINT and WORKDIR come back
    seen = invoke(lam, out["FunctionName"])
    assert (seen["argv"], seen["handler"], seen["cwd"]) == ("/app/bootstrap.sh third.h", "third.h", "/app")
    # And an empty ImageConfig removes the override (and ImageConfigResponse)
    up = lam.update_function_configuration(FunctionName=out["FunctionName"], ImageConfig={})
    assert "ImageConfigResponse" not in up


def test_update_code_to_another_image_and_publish(lam, image_function, layouts):
    out = image_function(f"{ECR}/hello:latest")
    settled(lam, out["FunctionName"])
    assert invoke(lam, out["FunctionName"])["image_var"] == "from-image"
    # When its code is updated to another tag
    up = lam.update_function_code(FunctionName=out["FunctionName"], ImageUri=f"{ECR}/hello:v2")
    # Then the answer is AWS's: the new digest, InProgress; a second update meanwhile is a conflict
    assert up["CodeSha256"] == digest_of(layouts / "hello", "v2") and up["LastUpdateStatus"] == "InProgress"
    config = settled(lam, out["FunctionName"])
    assert config["LastUpdateStatus"] == "Successful" and config["CodeSha256"] == up["CodeSha256"]
    assert invoke(lam, out["FunctionName"])["image_var"] == "v2"
    got = lam.get_function(FunctionName=out["FunctionName"])
    assert got["Code"]["ImageUri"] == f"{ECR}/hello:v2"
    # And with Publish the version published is that image
    up = lam.update_function_code(FunctionName=out["FunctionName"], ImageUri=f"{ECR}/hello:latest", Publish=True)
    assert up["Version"] == "1" and up["CodeSha256"] == digest_of(layouts / "hello")
    assert json.loads(lam.invoke(FunctionName=out["FunctionName"], Qualifier="1")["Payload"].read())["image_var"] \
        == "from-image"
    got = lam.get_function(FunctionName=out["FunctionName"], Qualifier="1")
    assert got["Code"]["ImageUri"] == f"{ECR}/hello:latest" and got["Configuration"]["PackageType"] == "Image"


def test_a_failed_update_keeps_the_image_that_ran(lam, image_function, layouts):
    out = image_function(f"{ECR}/hello:latest")
    settled(lam, out["FunctionName"])
    # When the code is updated to an image that does not unpack
    up = lam.update_function_code(FunctionName=out["FunctionName"], ImageUri=f"{ECR}/notar:latest")
    assert up["LastUpdateStatus"] == "InProgress"
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.update_function_code(FunctionName=out["FunctionName"], ImageUri=f"{ECR}/hello:v2")
    config = settled(lam, out["FunctionName"])
    # Then the update is Failed with AWS's reason code, the function stays Active and runs the image it had (the
    # configuration shows the update that failed, as for a zip function: kindling.functions.updates)
    assert config["LastUpdateStatus"] == "Failed" and config["LastUpdateStatusReasonCode"] == "InvalidImage"
    assert config["State"] == "Active" and config["CodeSha256"] == up["CodeSha256"]
    assert invoke(lam, out["FunctionName"])["image_var"] == "from-image"
    # And with Publish, an image that does not unpack is refused in the request
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.update_function_code(FunctionName=out["FunctionName"], ImageUri=f"{ECR}/notar:latest", Publish=True)
    assert "not a valid tar archive" in err.value.response["Error"]["Message"]


def test_a_multi_platform_index_resolves_to_the_functions_platform(lam, image_function, layouts):
    out = image_function(f"{ECR}/multi:latest")
    assert out["CodeSha256"] == digest_of(layouts / "multi", "amd64-only")  # the amd64 manifest's digest
    assert settled(lam, out["FunctionName"])["State"] == "Active"
    assert invoke(lam, out["FunctionName"])["handler"] == "handler.main"
    # An index whose digest is not hex (it would name a folder outside the images dir) is refused
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        image_function(f"{ECR}/multi:escape")
    assert not list(Path("/tmp").glob(f"{SENTINEL}*"))


def test_requests_that_mix_zip_and_image_answer_aws_errors(lam, image_function, hostile_server):
    base = {"FunctionName": unique("img"), "PackageType": "Image", "Role": ROLE,
            "Code": {"ImageUri": f"{ECR}/hello:latest"}}
    cases = [
        ({**base, "Runtime": "python3.12"}, "Please don't provide Handler or Runtime or Layer when the intended "
                                            "function PackageType is Image."),
        ({**base, "Handler": "app.handler"}, "Please don't provide Handler or Runtime or Layer"),
        ({**base, "Code": {}}, "Please provide ImageUri when the intended function PackageType is Image."),
        ({**base, "Code": {"ImageUri": f"{ECR}/nosuch:latest"}},
         f"Source image {ECR}/nosuch:latest does not exist. Provide a valid source image."),
        ({**base, "Code": {"ImageUri": "registry.example.com/hello:latest"}},
         "Source image registry.example.com/hello:latest is not valid."),
        ({**base, "Code": {"ImageUri": f"{ECR}/Bad..Name:latest"}}, "is not valid. Provide a valid source image."),
        ({**base, "ImageConfig": {"Command": ["x" * 1000] * 1500}}, "ImageConfig is larger than"),  # 1.5 MB
        ({**base, "PackageType": "Zip", "Runtime": "python3.12", "Handler": "app.handler",
          "Code": {"ZipFile": make_zip({"app.py": "x = 1\n"})}, "ImageConfig": {"Command": ["x"]}},
         "ImageConfig is not supported for functions with PackageType Zip."),
    ]
    for args, message in cases:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
            lam.create_function(**args)
        assert message in err.value.response["Error"]["Message"], (args, err.value.response)
    # Updates across package types: AWS's recorded messages
    img = image_function(f"{ECR}/hello:latest")
    settled(lam, img["FunctionName"])  # a Pending function's updates are refused first (state Pending)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.update_function_code(FunctionName=img["FunctionName"], ZipFile=make_zip({"app.py": "x = 1\n"}))
    assert err.value.response["Error"]["Message"] == "Please provide ImageUri when updating a function with " \
                                                     "packageType Image."
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=img["FunctionName"], Runtime="python3.12")
    zipped = lam.create_function(FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": "x = 1\n"})})
    try:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
            lam.update_function_code(FunctionName=zipped["FunctionName"], ImageUri=f"{ECR}/hello:latest")
        assert err.value.response["Error"]["Message"] == "Please don't provide ImageUri when updating a function " \
                                                         "with packageType Zip."
    finally:
        lam.delete_function(FunctionName=zipped["FunctionName"])


def test_images_come_from_a_registry_pushed_to_with_skopeo(lam, image_function, layouts):
    # Given hello:latest pushed to docker-registry as team/hello:latest (the registry fixture)
    out = image_function(f"{PUSHED}/team/hello:latest")
    # Then its digest is the registry's manifest digest, and it runs
    assert out["CodeSha256"] == digest_of(layouts / "hello")
    assert settled(lam, out["FunctionName"])["State"] == "Active"
    got = lam.get_function(FunctionName=out["FunctionName"])["Code"]
    assert got["ResolvedImageUri"] == f"{PUSHED}/team/hello@sha256:{out['CodeSha256']}"
    assert invoke(lam, out["FunctionName"])["handler"] == "handler.main"
    # And an ImageUri by digest names the same image
    by_digest = image_function(f"{PUSHED}/team/hello@sha256:{out['CodeSha256']}")
    assert by_digest["CodeSha256"] == out["CodeSha256"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        image_function(f"{PUSHED}/team/hello@sha256:{'0' * 64}")


def test_an_image_is_unpacked_once_and_removed_with_its_last_function(lam, image_function, hostile_server, layouts):
    roots = hostile_server.code_dir / ".images"
    digest = digest_of(layouts / "gc")
    first, second = image_function(f"{ECR}/gc:latest"), image_function(f"{ECR}/gc:latest")
    settled(lam, first["FunctionName"]), settled(lam, second["FunctionName"])
    assert (roots / digest / "rootfs" / "bin" / "busybox").is_file()
    assert [p.name for p in roots.iterdir() if p.name.startswith(digest)] == [digest]  # one tree for both
    lam.delete_function(FunctionName=first["FunctionName"])
    assert (roots / digest).is_dir()
    lam.delete_function(FunctionName=second["FunctionName"])
    deadline = time.monotonic() + 10
    while any(p.name.startswith(digest) for p in roots.iterdir()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_concurrent_creates_of_one_image_pull_it_once(lam, image_function, hostile_server, layouts):
    roots = hostile_server.code_dir / ".images"
    digest = digest_of(layouts / "many")
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        made = list(pool.map(lambda _: image_function(f"{ECR}/many:latest")["FunctionName"], range(12)))
    assert all(settled(lam, name)["State"] == "Active" for name in made)
    assert [p.name for p in roots.iterdir() if p.name.startswith(digest)] == [digest]
    assert invoke(lam, made[-1])["image_var"] == "many"


def test_a_hostile_image_stays_inside_its_root(lam, image_function, hostile_server):
    out = image_function(f"{ECR}/contained:latest")
    assert settled(lam, out["FunctionName"])["State"] == "Active"
    rootfs = hostile_server.code_dir / ".images" / out["CodeSha256"] / "rootfs"
    # Absolute paths and paths through links to / or upwards landed inside the root
    assert (rootfs / "abs.txt").is_file()
    assert (rootfs / f"{SENTINEL}-abs").is_file() and (rootfs / f"{SENTINEL}-up").is_file()
    for host in (Path("/"), Path("/tmp"), hostile_server.data_dir, hostile_server.code_dir):
        assert not list(host.glob(f"{SENTINEL}*")), host
    # No setuid bit, no device node; mount points are real directories and files again
    assert not (rootfs / "app" / "suid").stat().st_mode & 0o6000
    assert not (rootfs / "app" / "dev-null").exists()
    assert (rootfs / "tmp").is_dir() and not (rootfs / "tmp").is_symlink()
    assert (rootfs / "etc" / "resolv.conf").is_file() and not (rootfs / "etc" / "resolv.conf").is_symlink()
    seen = invoke(lam, out["FunctionName"])
    assert seen["setuid"] == "no" and seen["tmp_writable"] == "yes" and seen["resolv"] == "regular file"


def test_invalid_images_leave_their_function_failed_and_the_server_unhurt(lam, image_function, hostile_server,
                                                                          bystander: Bystander):
    names = ["dotdot", "whiteout", "whiteout-parent", "deep", "hardlink", "bomb", "bigblob", "notar", "badconfig",
             "badentry", "hugeenv", "missing"]
    made = {name: image_function(f"{ECR}/{name}:latest")["FunctionName"] for name in names}
    for image, fn in made.items():
        config = settled(lam, fn)
        # Then each is Failed with AWS's reason code, and invoking it is AWS's conflict
        assert config["State"] == "Failed" and config["StateReasonCode"] == "InvalidImage", (image, config)
        assert config["LastUpdateStatus"] == "Failed" and config["LastUpdateStatusReasonCode"] == "InvalidImage"
        with pytest.raises(lam.exceptions.ResourceConflictException) as err:
            lam.invoke(FunctionName=fn, Payload=b"{}")
        assert "The function is currently in the following state: Failed" in err.value.response["Error"]["Message"]
    # ... for the reason that image has (each would have been an escape, a crash or a full disk without its check)
    reasons = {image: lam.get_function_configuration(FunctionName=fn)["StateReason"] for image, fn in made.items()}
    for image, reason in {"dotdot": "a path that leaves the image", "whiteout": "a path that leaves the image",
                          "whiteout-parent": "an invalid whiteout", "deep": "more than 128 deep",
                          "hardlink": "a hard link names a file that is not in the image",
                          "bomb": f"larger than {MAX_MB} MB", "bigblob": f"larger than {MAX_MB} MB",
                          "notar": "not a valid tar archive",
                          "badconfig": "not valid JSON", "badentry": "Entrypoint is not a list of strings",
                          "hugeenv": "larger than 16384 bytes",
                          "missing": "a blob that is missing"}.items():
        assert reason in reasons[image], (image, reasons[image])
        assert "/tmp/" not in reasons[image]  # no host paths
    # And nothing was written outside the images dir, nor left behind inside it
    for host in (Path("/"), Path("/tmp"), hostile_server.data_dir.parent):
        assert not list(host.glob(f"{SENTINEL}*")), host
    roots = hostile_server.code_dir / ".images"
    failed = {lam.get_function_configuration(FunctionName=fn)["CodeSha256"] for fn in made.values()}
    assert not [p for p in roots.iterdir() if p.name.split(".")[0] in failed]
    bystander.check()


def test_a_pull_cut_off_by_a_restart_is_finished_after_it(layouts):
    with tempfile.TemporaryDirectory(prefix="kindling-images-restart-") as tmp:
        srv = Server(Path(tmp) / "data", image_sources=f"{ECR}=oci:{layouts}").start()
        try:
            lam = srv.client()
            name = lam.create_function(FunctionName=unique("img"), PackageType="Image", Role=ROLE,
                                       Code={"ImageUri": f"{ECR}/hello:latest"})["FunctionName"]
            srv.stop(kill=True)  # most likely while the image is being pulled
            srv.start()
            lam = srv.client()
            assert settled(lam, name)["State"] == "Active"
            assert invoke(lam, name)["handler"] == "handler.main"
        finally:
            srv.stop()


def _unpack(tmp: Path, *layers: bytes) -> Path:
    root = tmp / "rootfs"
    root.mkdir()
    r, budget = Root(str(root)), Budget(MAX_MB << 20)
    try:
        for data in layers:
            apply_layer(r, io.BytesIO(gzip.decompress(data)), budget)
        finish(r)
    finally:
        r.close()
    return root


def test_unpacking_resolves_every_path_inside_the_root(tmp_path):
    lower = layer({"etc/": info("etc", tarfile.DIRTYPE, 0o755), "etc/keep": b"k", "etc/drop": b"d",
                   "data/": info("data", tarfile.DIRTYPE, 0o755), "data/old": b"o",
                   "abs": info("abs", tarfile.SYMTYPE, linkname="/etc"),
                   "rootlink": info("rootlink", tarfile.SYMTYPE, linkname="/"),
                   "file": b"was a file", "dir/": info("dir", tarfile.DIRTYPE, 0o755)})
    upper = layer({"abs/passwd": b"through an absolute link",  # -> <root>/etc/passwd, never the host's
                   "etc/.wh.drop": b"", "data/.wh..wh..opq": b"", "data/new": b"n",
                   ".wh.rootlink": b"",  # removes the link, not what it points to
                   "file/": info("file", tarfile.DIRTYPE, 0o755), "dir": b"was a directory"})
    root = _unpack(tmp_path, lower, upper)
    assert (root / "etc" / "passwd").read_bytes() == b"through an absolute link"
    assert Path("/etc/passwd").read_bytes() != b"through an absolute link"
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["hosts", "keep", "passwd", "resolv.conf"]
    assert sorted(p.name for p in (root / "data").iterdir()) == ["new"]
    assert not (root / "rootlink").exists() and (root / "etc" / "keep").exists()
    assert (root / "file").is_dir() and (root / "dir").read_bytes() == b"was a directory"


@pytest.mark.parametrize(("entries", "reason"), [
    ({"a": info("a", tarfile.SYMTYPE, linkname="b"), "b": info("b", tarfile.SYMTYPE, linkname="a"),
      "a/x": b"loop"}, "too many levels of symbolic links"),
    ({"f": b"file", "l": info("l", tarfile.SYMTYPE, linkname="f"), "h": info("h", tarfile.LNKTYPE, linkname="l")},
     "not a regular file"),
    ({"d/": info("d", tarfile.DIRTYPE, 0o755), "h": info("h", tarfile.LNKTYPE, linkname="d")}, "not a regular file"),
    ({"f": b"file", "l": info("l", tarfile.SYMTYPE, linkname="f"), "l/x": b"under a file"}, "not a directory"),
    ({".wh..wh..opq/../x": b""}, "leaves the image"),
])
def test_unpacking_refuses_what_cannot_be_contained(tmp_path, entries, reason):
    with pytest.raises(InvalidImage, match=reason):
        _unpack(tmp_path, layer(entries))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rootfs"]  # nothing beside the root


def test_provisioned_concurrency_runs_an_image(lam, image_function):
    out = image_function(f"{ECR}/hello:latest", Publish=True)
    settled(lam, out["FunctionName"])
    lam.put_provisioned_concurrency_config(FunctionName=out["FunctionName"], Qualifier="1",
                                           ProvisionedConcurrentExecutions=1)
    deadline = time.monotonic() + 30
    while (status := lam.get_provisioned_concurrency_config(FunctionName=out["FunctionName"], Qualifier="1"))[
            "Status"] == "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status["Status"] == "READY" and status["AvailableProvisionedConcurrentExecutions"] == 1, status
    got = lam.invoke(FunctionName=out["FunctionName"], Qualifier="1", Payload=b"{}")
    assert json.loads(got["Payload"].read())["handler"] == "handler.main"
    lam.delete_provisioned_concurrency_config(FunctionName=out["FunctionName"], Qualifier="1")

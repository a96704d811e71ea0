"""Bad code packages and oversized requests get AWS's errors and leave nothing behind."""

from __future__ import annotations

import io
import stat
import urllib.error
import urllib.request
import zipfile

import pytest
from botocore.exceptions import ClientError

from tests.conftest import HELLO, ROLE, make_zip, unique
from tests.recorded import recorded

UNZIP_ERROR = "Could not unzip uploaded file. Please check your file, then try to upload again."


def _zip_with(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _bomb() -> bytes:
    """~300 MB of zeros in a few hundred KB: past Lambda's 250 MB unzipped limit."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", HELLO)
        with zf.open("zeros.bin", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(300):
                f.write(chunk)
    return buf.getvalue()


BAD_ZIPS = {
    "corrupt": (lambda: make_zip({"app.py": HELLO})[:-30], UNZIP_ERROR),
    "dotdot": (lambda: make_zip({"app.py": HELLO, "../evil.py": "x"}), UNZIP_ERROR),
    "absolute": (lambda: make_zip({"app.py": HELLO, "/etc/evil": "x"}), UNZIP_ERROR),
    "symlink-out": (lambda: _zip_with([(zipfile.ZipInfo("app.py"), HELLO.encode()),
                                       _symlink("passwd", "/etc/passwd")]), UNZIP_ERROR),
    "symlink-up": (lambda: _zip_with([(zipfile.ZipInfo("app.py"), HELLO.encode()),
                                      _symlink("up", "../../..")]), UNZIP_ERROR),
    "bomb": (_bomb, recorded("lambda_api", "test_oversized_unzipped_lambda", "invalid_param_exc")["Error"]["Message"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_ZIPS))
def test_bad_zip_is_refused_and_leaves_nothing(lam, server, create_function, kind):
    make, message = BAD_ZIPS[kind]
    bad = make()
    code_dir = server.code_dir
    existing = create_function()  # a function whose code must survive a refused update
    before = set(code_dir.iterdir())
    assert before  # the code store as the server sees it, holding the existing function's code
    name = unique()
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": bad})
    assert exc.value.response["Error"] == {"Code": "InvalidParameterValueException", "Message": message}
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=existing["FunctionName"], ZipFile=bad)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert set(code_dir.iterdir()) == before
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    after = lam.get_function_configuration(FunctionName=existing["FunctionName"])
    assert after["CodeSha256"] == existing["CodeSha256"]


def test_zipped_size_over_50mb(lam, server):
    import os
    big = make_zip({"app.py": HELLO, "blob.bin": os.urandom(50 * 1024 * 1024 + 100 * 1024)})
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": big})
    expected = recorded("lambda_api", "test_oversized_zipped_create_lambda", "invalid_param_exc")
    assert exc.value.response["Error"] == expected["Error"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_request_over_lambda_limit(server):
    body = b'{"FunctionName": "x", "Code": {"ZipFile": "' + b"A" * 70_200_000 + b'"}}'
    req = urllib.request.Request(server.endpoint + "/2015-03-31/functions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    expected = recorded("lambda_api", "test_oversized_request_create_lambda", "invalid_param_exc")["Error"]
    with exc.value:
        assert exc.value.code == 413
        assert exc.value.headers["X-Amzn-ErrorType"] == expected["Code"]
        assert expected["Message"].encode() in exc.value.read()

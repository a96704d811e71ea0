"""Function names, partial ARNs, full ARNs and qualifiers, as Lambda accepts them."""

from __future__ import annotations

import re

from kindling import errors

# arn:aws:lambda:region:account:function:name[:qualifier] | account:function:name[:q] | name[:q]
_FULL = re.compile(r"arn:(aws[a-zA-Z-]*)?:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
                   r"(?P<name>[a-zA-Z0-9-_]+)(:(?P<qualifier>[a-zA-Z0-9-_$]+))?")
_PARTIAL = re.compile(r"(?P<account>\d{12}):function:(?P<name>[a-zA-Z0-9-_]+)(:(?P<qualifier>[a-zA-Z0-9-_$]+))?")
_NAME = re.compile(r"(?P<name>[a-zA-Z0-9-_]+)(:(?P<qualifier>[a-zA-Z0-9-_$]+))?")
# Anything else the model's pattern lets through, parsed as Lambda parses it: every part optional, so an incomplete
# ARN such as arn:aws:lambda:us-east-1:123456789012:function names a function called "function" (recorded).
_ANY = re.compile(r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((?P<region>[a-z]{2}(-gov)?-[a-z]+-\d{1}):)?((?P<account>\d{12}):)?"
                  r"(function:)?(?P<name>[a-zA-Z0-9-_]+)(:(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?")


def function_arn(region: str, account: str, name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def split_function(ident: str, region: str, account: str, qualifier: str | None = None) -> tuple[str, str | None]:
    """(name, qualifier) of a FunctionName member plus an optional Qualifier member.

    The model's pattern has already been checked; this resolves the form and
    refuses ARNs of another region or account as Lambda does.
    """
    m = _FULL.fullmatch(ident) or _PARTIAL.fullmatch(ident) or _NAME.fullmatch(ident) or _ANY.fullmatch(ident)
    if m is None:
        raise errors.ValidationException(f"1 validation error detected: Value '{ident}' at 'functionName' failed to "
                                         "satisfy constraint: Member must satisfy regular expression pattern: "
                                         "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?"
                                         "(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?")
    groups = m.groupdict()
    if groups.get("region") and groups["region"] != region:
        raise errors.ResourceNotFoundException(
            f"Functions from '{groups['region']}' are not reachable in this region ('{region}')")
    if groups.get("account") and groups["account"] != account:
        raise errors.AccessDeniedException("")
    derived = groups.get("qualifier")
    if derived and qualifier and derived != qualifier:
        raise errors.InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier.")
    return groups["name"], derived or qualifier


def is_alias(qualifier: str) -> bool:
    """Whether a qualifier names an alias rather than $LATEST or a version (alias names are never all digits)."""
    return qualifier != "$LATEST" and not qualifier.isdigit()

"""Where two parsed YAML/JSON documents first differ: shared by the SDK checkers
(check_kfp.py, check_katib.py), which import it from their own folder."""


def first_diff(a, b, path=""):
    """`/path/to/key: x != y`, or `/path/k: only in first|second`, for the first difference."""
    if type(a) is not type(b):
        return f"{path or '/'}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'first' if k in a else 'second'}"
            if a[k] != b[k]:
                return first_diff(a[k], b[k], f"{path}/{k}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: list lengths {len(a)} != {len(b)}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_diff(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} != {b!r}"

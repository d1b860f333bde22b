import json


def write_jsonl(path, records):
    """Write ``records`` as JSON Lines and return ``path``."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path

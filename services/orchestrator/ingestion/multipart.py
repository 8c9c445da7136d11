"""multipart/form-data request bodies (what OpenAI SDKs send to POST /v1/files), read with the standard library's
MIME parser."""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.parser import BytesParser


class MultipartError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FormPart:
    name: str
    filename: str | None
    data: bytes


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """Form fields by name. Raises MultipartError when the body is not multipart/form-data with a boundary."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise MultipartError("expected a multipart/form-data body with a boundary")
    try:
        header = content_type.encode("latin-1")
    except UnicodeEncodeError:
        raise MultipartError("the Content-Type header is not Latin-1 text") from None
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + header + b"\r\nMIME-Version: 1.0\r\n\r\n"
                                                         + body)
    if not message.is_multipart():
        raise MultipartError("the multipart body could not be read")
    parts: dict[str, FormPart] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        parts[str(name)] = FormPart(str(name), part.get_filename(), data)
    return parts

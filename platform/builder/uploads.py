"""The HTTP side of the builder's subject upload: stop a multipart body at the first file over the
limit while it streams in, so that an oversized file is never written to disk whole."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest

from projects.errors import InputRejected
from projects.uploads import UploadLimits, size_text


class LimitedUploadHandler(FileUploadHandler):
    """First of the request's upload handlers: counts each file's bytes and the files, and raises
    InputRejected (HTTP 413) as soon as one is over ``limits``; passes every chunk on otherwise."""

    def __init__(self, request: HttpRequest, limits: UploadLimits) -> None:
        super().__init__(request)
        self.limits = limits
        self.files = 0
        self.received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.files += 1
        self.received = 0
        if self.files > self.limits.max_files + 1:  # the images and their manifest
            raise InputRejected({"images": [f"more than {self.limits.max_files} files at once"]}, status=413)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limits.max_file_bytes:
            raise InputRejected(
                {"images": [f"{self.file_name} is over {size_text(self.limits.max_file_bytes)}, the limit per file"]}, status=413,
            )
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

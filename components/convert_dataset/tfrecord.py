"""tf.train.Example messages and TFRecord files without importing TensorFlow.

The conversion workers only build Example protos and append them to TFRecord files. Importing
TensorFlow for that costs each worker process seconds of start-up and hundreds of MB, so this
module declares the same messages (`tensorflow/core/example/{example,feature}.proto`: the same
field numbers and types, proto3 packing) in a private descriptor pool and frames records the way
TFRecord files are framed. Serialized bytes equal TensorFlow's; `tf.data.TFRecordDataset` and
`tf.io.parse_single_example` read the files (the tests check both).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterator
from typing import IO, Any

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """tensorflow.Example and the messages it is made of, as a descriptor."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="vision_pipelines/tf_example.proto", package="tensorflow", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str | None, int | None]) -> Any:
        msg = proto.message_type.add(name=name)
        for field_name, number, label, kind, type_name, oneof in fields:
            field = msg.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                field.oneof_index = oneof
        return msg

    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, repeated, _F.TYPE_BYTES, None, None))
    message("FloatList", ("value", 1, repeated, _F.TYPE_FLOAT, None, None))
    message("Int64List", ("value", 1, repeated, _F.TYPE_INT64, None, None))
    feature = message(
        "Feature",
        ("bytes_list", 1, optional, _F.TYPE_MESSAGE, ".tensorflow.BytesList", 0),
        ("float_list", 2, optional, _F.TYPE_MESSAGE, ".tensorflow.FloatList", 0),
        ("int64_list", 3, optional, _F.TYPE_MESSAGE, ".tensorflow.Int64List", 0),
    )
    feature.oneof_decl.add(name="kind")
    features = message(
        "Features",
        ("feature", 1, repeated, _F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", None),
    )
    # A proto map<string, Feature> is a repeated nested entry message marked as a map entry.
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, label=optional, type=_F.TYPE_STRING)
    entry.field.add(
        name="value", number=2, label=optional, type=_F.TYPE_MESSAGE,
        type_name=".tensorflow.Feature",
    )  # fmt: skip
    entry.options.map_entry = True
    message("Example", ("features", 1, optional, _F.TYPE_MESSAGE, ".tensorflow.Features", None))
    return proto


# A private pool: TensorFlow registers the same full names in the default pool when it is loaded
# in the same process, and the two must not clash.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tensorflow.{name}"))


BytesList = _message_class("BytesList")
FloatList = _message_class("FloatList")
Int64List = _message_class("Int64List")
Feature = _message_class("Feature")
Features = _message_class("Features")
Example = _message_class("Example")


# ---------------------------------------------------------------------------------- TFRecord
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One TFRecord: length (uint64 LE), its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            record,
            struct.pack("<I", masked_crc32c(record)),
        )
    )


class TFRecordWriter:
    """Writes framed records to a local file; `compression='GZIP'` gzips the stream as
    TensorFlow's GZIP option does (with a fixed header time, so output is reproducible)."""

    def __init__(self, path: str | os.PathLike, compression: str | None = None):
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._stream: IO[bytes] = self._file
        if compression == "GZIP":
            self._stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._file, compresslevel=6, mtime=0
            )
        elif compression:
            self._file.close()
            raise ValueError(f"compression must be None or 'GZIP', got {compression!r}")

    def write(self, record: bytes) -> None:
        self._stream.write(frame(record))

    def close(self) -> None:
        if self._stream is not self._file:
            self._stream.close()
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_records(path: str | os.PathLike, compression: str | None = None) -> Iterator[bytes]:
    """The records of a local TFRecord file, read one at a time, checking every checksum.

    Raises:
      ValueError: a truncated file or a checksum mismatch.
    """
    opener = gzip.open if compression == "GZIP" else open
    with opener(path, "rb") as stream:
        yield from _records(stream)


def _records(stream: IO[bytes]) -> Iterator[bytes]:
    while header := stream.read(12):
        if len(header) < 12:
            raise ValueError("truncated TFRecord header")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise ValueError("TFRecord length checksum mismatch")
        record = stream.read(length)
        footer = stream.read(4)
        if len(record) < length or len(footer) < 4:
            raise ValueError("truncated TFRecord")
        if struct.unpack("<I", footer)[0] != masked_crc32c(record):
            raise ValueError("TFRecord data checksum mismatch")
        yield record

"""Fast conversion between numpy arrays and protobuf packed float fields.

Reading a `repeated float` field element by element costs about 2.4 ms per 64 images in Python
(50,000 boxed floats); filling one costs about 90 us. A packed repeated float is, on the wire,
one tag, one varint length and the little-endian float32 bytes, so both directions can go
through `SerializeToString`/`MergeFromString` and numpy's buffer functions instead. proto3
always packs repeated scalars, which makes this exact; where a message holds anything else the
callers fall back to the plain path.
"""

from __future__ import annotations

import numpy as np

from digitserve.contract import NUM_CLASSES

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while position < len(data):
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ValueError("truncated varint")


def packed_floats(message_bytes: bytes, field_number: int) -> np.ndarray | None:
    """The float32 values of a message whose only content is packed float field `field_number`.

    Returns None when the serialized message holds anything else (the caller then takes the
    plain path, which also reports mixed contents), and an empty array for an empty message.
    """
    if not message_bytes:
        return np.empty(0, dtype=np.float32)
    tag = bytes([(field_number << 3) | _LENGTH_DELIMITED])
    if message_bytes[:1] != tag:
        return None
    try:
        length, start = _read_varint(message_bytes, 1)
    except ValueError:
        return None
    if start + length != len(message_bytes) or length % 4:
        return None
    return np.frombuffer(message_bytes, dtype="<f4", offset=start, count=length // 4)


def packed_float_field(field_number: int, values: np.ndarray) -> bytes:
    """Wire bytes of a packed float field holding `values`, for MergeFromString."""
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return bytes([(field_number << 3) | _LENGTH_DELIMITED]) + _varint(len(data)) + data


def prediction_messages(field_number: int, probabilities: np.ndarray) -> bytes:
    """Wire bytes of `repeated Prediction <field_number>` for rows of 10 probabilities.

    Prediction is {int32 label = 1; repeated float probabilities = 2;}; every entry has the same
    46-byte layout, so all of them are built as one numpy record array.
    """
    count = len(probabilities)
    body = 2 + 2 + 4 * NUM_CLASSES  # label tag+value, probabilities tag+length, floats
    records = np.empty((count, 2 + body), dtype=np.uint8)
    records[:, 0] = (field_number << 3) | _LENGTH_DELIMITED
    records[:, 1] = body
    records[:, 2] = (1 << 3) | 0  # label: field 1, varint (0..9 fits one byte)
    records[:, 3] = np.argmax(probabilities, axis=1)
    records[:, 4] = (2 << 3) | _LENGTH_DELIMITED
    records[:, 5] = 4 * NUM_CLASSES
    floats = np.ascontiguousarray(probabilities, dtype="<f4").view(np.uint8)
    records[:, 6:] = floats.reshape(count, 4 * NUM_CLASSES)
    return records.tobytes()


def pack_bytes_elements(elements: list[bytes]) -> bytes:
    """A V2 BYTES tensor in Triton's raw layout: each element as a 4-byte little-endian length,
    then its bytes (raw_input_contents, and HTTP/REST binary data)."""
    return b"".join(len(element).to_bytes(4, "little") + bytes(element) for element in elements)


def unpack_bytes_elements(raw: bytes) -> list[bytes]:
    """The elements of a BYTES tensor in Triton's raw layout; ValueError saying where it breaks."""
    view, elements, position = memoryview(raw), [], 0
    while position < len(view):
        if position + 4 > len(view):
            left = len(view) - position
            raise ValueError(f"{left} bytes at offset {position} are too few for an element's 4-byte length")
        length = int.from_bytes(view[position : position + 4], "little")
        position += 4
        if position + length > len(view):
            raise ValueError(
                f"element {len(elements)} declares {length} bytes at offset {position - 4}, but only "
                f"{len(view) - position} follow"
            )
        elements.append(bytes(view[position : position + length]))
        position += length
    return elements

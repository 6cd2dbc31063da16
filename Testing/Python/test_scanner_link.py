"""`fetalbrainseg stream` (issue 17): a simulated scanner sends a real shared stack over OpenIGTLink on loopback."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pyigtl
import pytest
from conftest import with_ctrl_c

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.streaming import StreamingSegmenter
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.scanner.link import ScannerLink
from FetalBrainSegLib.scanner.replay import Replay, slice_messages
from FetalBrainSegLib.scanner.wire import STATUS_CHECKSUM_ERROR, STATUS_UNKNOWN_INSTRUCTION, send

HASTE_SLICES_PER_SECOND = 2.0


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(device="cpu")


@pytest.fixture(scope="module")
def stack(manifest):
    """The shortest labelled T2W test stack, as a scanner would acquire it."""
    records = [r for r in manifest if r.split == "test" and r.modality == "T2W"]
    volumes = [read_volume(r.image) for r in records]
    return min(volumes, key=lambda v: Stack(v).num_slices)


@pytest.fixture
def link(segmenter):
    lines = []
    server = ScannerLink(StreamingSegmenter(segmenter), port=0, log=lines.append)
    thread = server.start()
    server.lines = lines
    yield server
    server.stop()
    thread.join(5)
    assert not thread.is_alive()


def engine_masks(segmenter, messages):
    """What the engine's streaming API gives for the same slices in the same order."""
    streaming = StreamingSegmenter(segmenter)
    return [streaming.process(m.image[0].T, m.ijk_to_world_matrix).mask for m in messages]


def answers_by_slice(received):
    """[(mask IMAGE, TRANSFORM or None, review dict)] per slice, checking the order they came in."""
    answers, current = [], None
    for _, message in received:
        kind = message.message_type
        if kind == "IMAGE":
            assert current is None, "a mask came before the previous slice's review"
            current = [message, None]
        elif kind == "TRANSFORM":
            assert current is not None and current[1] is None
            current[1] = message
        elif kind == "STRING":
            answers.append((current[0], current[1], json.loads(message.message.string)))
            current = None
    return answers


@pytest.mark.parametrize("rate", [HASTE_SLICES_PER_SECOND, None], ids=["haste_rate", "as_fast_as_possible"])
def test_every_slice_is_answered_in_order_with_the_engines_mask_and_a_centroid_in_scanner_coordinates(
    link, segmenter, stack, rate
):
    messages = slice_messages(stack, "HASTE")
    expected = engine_masks(segmenter, messages)
    scanner = Replay("127.0.0.1", link.port)
    stamps = scanner.send(messages, rate)
    answers = answers_by_slice(scanner.wait_for(len(messages), "STRING"))
    scanner.close()
    assert len(answers) == len(messages)
    brain_slices = 0
    for k, (mask, transform, review) in enumerate(answers):
        assert review["slice"] == k  # the order is kept, none dropped
        assert mask.device_name == "HASTE_brainmask" and mask.timestamp == pytest.approx(stamps[k], abs=1e-6)
        np.testing.assert_array_equal(mask.message.image[0].T, expected[k])
        np.testing.assert_allclose(mask.message.ijk_to_world_matrix, messages[k].ijk_to_world_matrix, atol=1e-3)
        voxels = np.argwhere(expected[k] > 0)
        assert review["brain"] == (transform is not None) == bool(len(voxels))
        if len(voxels):  # the centroid of the mask's voxels (i, j, slice k), through the stack's own affine
            brain_slices += 1
            ijk = np.c_[voxels, np.full(len(voxels), k), np.ones(len(voxels))].mean(axis=0)
            centroid = (stack.affine @ ijk)[:3]
            np.testing.assert_allclose(transform.message.matrix[:3, 3], centroid, atol=1e-2)
            np.testing.assert_allclose(review["centroid_mm"], centroid, atol=1e-2)
            low, high = np.array(review["bbox_mm"])
            assert np.all(low <= centroid) and np.all(centroid <= high) and review["coordinates"] == "RAS"
            assert transform.timestamp == pytest.approx(stamps[k], abs=1e-6)
    assert brain_slices >= 3
    if rate is None:  # sent faster than segmented: slices waited in the queue, and it says so
        assert max(review["queued"] for _, _, review in answers) > 0


def test_a_new_series_restarts_the_normalization(link, segmenter, stack):
    first = slice_messages(stack, "seriesA")
    bright = slice_messages(type(stack)(stack.data * 5.0, stack.affine), "seriesB")
    scanner = Replay("127.0.0.1", link.port)
    scanner.send(first[:4] + bright[4:6])
    answers = answers_by_slice(scanner.wait_for(6, "STRING"))
    scanner.close()
    assert [review["slice"] for _, _, review in answers] == [0, 1, 2, 3, 0, 1]
    restarted = engine_masks(segmenter, bright[4:6])  # a fresh series: statistics from its own slices only
    for (mask, _, _), expected in zip(answers[4:], restarted):
        np.testing.assert_array_equal(mask.message.image[0].T, expected)
    assert any("new series" in line for line in link.lines)


def corrupted(message, offset_from_end):
    data = bytearray(message.pack())
    data[-offset_from_end] ^= 0xFF
    return bytes(data)


def test_bad_messages_get_an_error_status_and_the_link_stays_up(link, stack):
    good = slice_messages(stack, "scan")
    scanner = Replay("127.0.0.1", link.port)
    scanner.sock.sendall(corrupted(good[0], 100))  # a flipped voxel byte: the checksum fails
    body = struct.pack("> H B B B B", 1, 1, 10, 2, 2) + b"\0" * 10  # an IMAGE body cut short, with a valid CRC
    header = struct.pack("> H 12s 20s II Q Q", 1, b"IMAGE", b"scan", 0, 0, len(body), pyigtl.messages.CRC64(body))
    scanner.sock.sendall(header + body)
    send(scanner.sock, pyigtl.ImageMessage(np.zeros((1, 8, 8, 3), np.uint8), device_name="scan"))  # RGB
    send(scanner.sock, pyigtl.ImageMessage(np.ones((1, 1, 8), np.float32), device_name="scan"))  # a line
    send(scanner.sock, pyigtl.StringMessage("hello", device_name="scan"))
    nan_slice = good[1].image.astype(np.float32)
    nan_slice[0, 3, 3] = np.nan
    send(scanner.sock, pyigtl.ImageMessage(nan_slice, good[1].ijk_to_world_matrix, device_name="scan"))
    scanner.send(good[2:3])  # and a good slice is still answered, after them
    received = scanner.wait_for(1, "STRING")
    scanner.close()
    kinds = [m.message_type for _, m in received]
    assert kinds[:6] == ["STATUS"] * 6 and kinds[6] == "IMAGE", kinds
    statuses = [m.message for _, m in received[:6]]
    assert statuses[0].code == STATUS_CHECKSUM_ERROR and "checksum" in statuses[0].status_string
    assert "cannot be decoded" in statuses[1].status_string
    assert "3-component" in statuses[2].status_string
    assert "a line" in statuses[3].status_string
    assert statuses[4].code == STATUS_UNKNOWN_INSTRUCTION and "only IMAGE" in statuses[4].status_string
    assert "NaN" in statuses[5].status_string
    assert all(m.device_name == "scan_status" for m in statuses)


def test_a_dropped_connection_is_logged_and_the_next_one_is_served(link, stack):
    messages = slice_messages(stack, "scan")
    first = Replay("127.0.0.1", link.port)
    first.sock.sendall(messages[0].pack()[:500])  # hangs up in the middle of a message
    first.close()
    second = Replay("127.0.0.1", link.port)
    second.send(messages[:2])
    answers = answers_by_slice(second.wait_for(2, "STRING"))
    second.close()
    assert [review["slice"] for _, _, review in answers] == [0, 1]
    assert sum(line.startswith("connection closed") for line in link.lines) >= 1


def test_a_pyigtl_client_gets_its_mask(link, stack):
    """Interoperability: pyigtl's own client, as a scanner-side script would use it."""
    message = slice_messages(stack, "probe")[len(slice_messages(stack, "probe")) // 2]
    client = pyigtl.OpenIGTLinkClient("127.0.0.1", link.port)
    try:
        client.send_message(message, wait=True)
        mask = client.wait_for_message("probe_brainmask", timeout=30)
    finally:
        client.stop()
    assert mask is not None and mask.image.shape == message.image.shape and mask.image.any()


def test_the_command_streams_and_connects_out(tmp_path, stack):
    """`fetalbrainseg stream --connect`: it reaches a listening sender, answers, and Ctrl-C ends it with 130."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "FetalBrainSegLib", "stream", "--connect", f"127.0.0.1:{port}", "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=with_ctrl_c,
    )
    try:
        listener.settimeout(120)
        sock, _ = listener.accept()
        message = slice_messages(stack, "scanner")[5]
        send(sock, message)
        sock.settimeout(60)
        from FetalBrainSegLib.scanner.wire import receive

        reply = receive(sock)
        assert reply.message_type == "IMAGE" and reply.device_name == "scanner_brainmask"
        sock.close()
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
        listener.close()
    assert process.returncode == 130
    assert re.search(r"connecting to 127\.0\.0\.1:\d+", errors) and "connection closed" in errors


def test_the_command_refuses_a_malformed_address(capsys):
    from FetalBrainSegLib.cli import main

    assert main(["stream", "--connect", "scanner-without-port"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_an_unreadable_header_gets_a_status_then_the_connection_ends_and_the_next_is_served(link, stack):
    scanner = Replay("127.0.0.1", link.port)
    header = struct.pack("> H 12s 20s II Q Q", 1, b"IMAGE", b"scan", 0, 0, 1 << 40, 0)  # a terabyte body
    scanner.sock.sendall(header)
    received = scanner.wait_for(1, "STATUS")
    assert "beyond any stack" in received[0][1].message.status_string
    scanner._reader.join(10)  # the server hung up: the stream cannot be followed past that header
    assert not scanner._reader.is_alive()
    scanner.close()
    following = Replay("127.0.0.1", link.port)
    following.send(slice_messages(stack, "scan")[:1])
    assert following.wait_for(1, "STRING")
    following.close()

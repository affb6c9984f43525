#!/usr/bin/env python3
"""Writes bridge/tests/fixtures/lorawan-vectors.json: LoRaWAN 1.0.x frames computed by an
independent reading of the specification (LoRaWAN 1.0.4 §4 MAC frames, §6.2 OTAA; AES
and AES-CMAC from the `cryptography` package), against which the fleet simulator's
gateway mode (built on the `lorawan` crate) is tested.

    python3 tools/lorawan_vectors.py          # rewrite the file
    python3 tools/lorawan_vectors.py --check  # exit 1 if it differs from what is committed

Before writing anything it checks this encoder against a published vector: the join
accept in the `lorawan` crate's documentation (AppKey 00112233…ff), whose MIC must verify.
"""
import json
import pathlib
import struct
import sys

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "bridge" / "tests" / "fixtures" / "lorawan-vectors.json"


def aes_ecb(key, block, decrypt=False):
    c = Cipher(algorithms.AES(key), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()


def mic(key, msg):
    c = cmac.CMAC(algorithms.AES(key))
    c.update(msg)
    return c.finalize()[:4]


def join_request(app_key, join_eui, dev_eui, dev_nonce):
    body = b"\x00" + join_eui[::-1] + dev_eui[::-1] + struct.pack("<H", dev_nonce)
    return body + mic(app_key, body)


def join_accept(app_key, app_nonce, net_id, dev_addr, dl_settings, rx_delay):
    mhdr = b"\x20"
    fields = app_nonce[::-1] + net_id[::-1] + dev_addr[::-1] + bytes([dl_settings, rx_delay])
    m = mic(app_key, mhdr + fields)
    # the network server *decrypts* to encrypt, so the device needs only AES encrypt
    return mhdr + aes_ecb(app_key, fields + m, decrypt=True)


def session_keys(app_key, app_nonce, net_id, dev_nonce):
    tail = app_nonce[::-1] + net_id[::-1] + struct.pack("<H", dev_nonce)
    pad = lambda b: b + bytes(16 - len(b))
    return (aes_ecb(app_key, pad(b"\x01" + tail)), aes_ecb(app_key, pad(b"\x02" + tail)))


def crypt_frm(key, dev_addr, fcnt, direction, payload):
    out = bytearray()
    for i in range(0, len(payload), 16):
        a = b"\x01" + bytes(4) + bytes([direction]) + dev_addr[::-1] + struct.pack("<I", fcnt) + b"\x00" + bytes([i // 16 + 1])
        s = aes_ecb(key, a)
        out += bytes(x ^ y for x, y in zip(payload[i:i + 16], s))
    return bytes(out)


def data_frame(nwk_skey, app_skey, dev_addr, fcnt, fport, payload, uplink, confirmed=False, fctrl=0):
    mtype = (4 if confirmed else 2) if uplink else (5 if confirmed else 3)
    direction = 0 if uplink else 1
    msg = bytes([mtype << 5]) + dev_addr[::-1] + bytes([fctrl]) + struct.pack("<H", fcnt & 0xFFFF)
    msg += bytes([fport]) + crypt_frm(app_skey, dev_addr, fcnt, direction, payload)
    b0 = b"\x49" + bytes(4) + bytes([direction]) + dev_addr[::-1] + struct.pack("<I", fcnt) + b"\x00" + bytes([len(msg)])
    return msg + mic(nwk_skey, b0 + msg)


def self_check():
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    phy = bytes.fromhex("20493eeb51fba2116f810edb3742975142")
    plain = aes_ecb(key, phy[1:], decrypt=False)  # the device encrypts to decrypt
    if mic(key, phy[:1] + plain[:-4]) != plain[-4:]:
        sys.exit("lorawan_vectors.py: the published join accept does not verify: this encoder is wrong")


def vectors():
    app_key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    join_eui = bytes.fromhex("70b3d57ed0000000")
    dev_eui = bytes.fromhex("70b3d57ed0000001")
    dev_nonce = 1
    app_nonce, net_id, dev_addr = bytes.fromhex("a1b2c3"), bytes.fromhex("000013"), bytes.fromhex("260b1234")
    nwk, app = session_keys(app_key, app_nonce, net_id, dev_nonce)
    status = bytes.fromhex("00a0ffb27ff8a0a8503700c000")  # any bytes: the frame layer does not care
    command = bytes.fromhex("020007000000000000")[:8]
    return {
        "about": "LoRaWAN 1.0.x frames from tools/lorawan_vectors.py (independent of the lorawan crate)",
        "app_key": app_key.hex(), "join_eui": join_eui.hex(), "dev_eui": dev_eui.hex(),
        "dev_nonce": dev_nonce,
        "join_request": join_request(app_key, join_eui, dev_eui, dev_nonce).hex(),
        "join_accept": {
            "app_nonce": app_nonce.hex(), "net_id": net_id.hex(), "dev_addr": dev_addr.hex(),
            "dl_settings": 0, "rx_delay": 1,
            "phy": join_accept(app_key, app_nonce, net_id, dev_addr, 0, 1).hex(),
        },
        "nwk_skey": nwk.hex(), "app_skey": app.hex(),
        "uplinks": [
            {"f_cnt": f, "f_port": 10, "payload": status.hex(),
             "phy": data_frame(nwk, app, dev_addr, f, 10, status, uplink=True).hex()}
            for f in (0, 1, 70000)
        ],
        "downlink": {"f_cnt": 0, "f_port": 20, "payload": command.hex(),
                     "phy": data_frame(nwk, app, dev_addr, 0, 20, command, uplink=False).hex()},
        # a confirmed downlink (MType 101), and the device's next uplink acknowledging it
        # with FCtrl's ACK bit (0x20), as the firmware does
        "confirmed_downlink": {
            "f_cnt": 1, "f_port": 20, "payload": command.hex(),
            "phy": data_frame(nwk, app, dev_addr, 1, 20, command, uplink=False, confirmed=True).hex(),
        },
        "acknowledging_uplink": {
            "f_cnt": 2, "f_port": 10, "payload": status.hex(),
            "phy": data_frame(nwk, app, dev_addr, 2, 10, status, uplink=True, fctrl=0x20).hex(),
        },
    }


def main():
    self_check()
    text = json.dumps(vectors(), indent=2) + "\n"
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} differs from tools/lorawan_vectors.py's output: run it and commit")
        return
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

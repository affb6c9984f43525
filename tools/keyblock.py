#!/usr/bin/env python3
"""Writes a node's LoRaWAN keys as a UF2 file for a Raspberry Pi Pico running the
longproto example firmware (device-node/rp2040). Drop it on the board's RPI-RP2 drive
after the firmware: it writes only the key page (0x101FE000), so the firmware stays.

    python3 tools/keyblock.py DEV_EUI JOIN_EUI APP_KEY -o keys.uf2
    python3 tools/keyblock.py --hex DEV_EUI JOIN_EUI APP_KEY   # print the 40-byte block

EUIs are 16 hex digits and the AppKey 32, as the network server shows them (MSB first);
`:` and `-` separators are allowed. The block layout is documented in
device-node/src/provision.rs.
"""
import argparse
import struct
import sys
import zlib

KEY_PAGE_ADDR = 0x101FE000
RP2040_FAMILY = 0xE48BFF56
UF2_MAGIC = (0x0A324655, 0x9E5D5157, 0x0AB16F30)
UF2_FLAG_FAMILY = 0x00002000


def parse_hex(name, value, length):
    clean = value.replace(":", "").replace("-", "").replace(" ", "")
    try:
        raw = bytes.fromhex(clean)
    except ValueError:
        raw = b""
    if len(raw) != length:
        sys.exit(f"keyblock: {name} must be {length} bytes ({2 * length} hex digits), got {value!r}")
    return raw


def block(dev_eui, join_eui, app_key):
    body = b"LPK1" + dev_eui + join_eui + app_key
    return body + struct.pack("<I", zlib.crc32(body))


def uf2(data, addr):
    page = data.ljust(256, b"\xff")
    head = struct.pack("<8I", UF2_MAGIC[0], UF2_MAGIC[1], UF2_FLAG_FAMILY, addr, 256, 0, 1,
                       RP2040_FAMILY)
    return head + page.ljust(476, b"\x00") + struct.pack("<I", UF2_MAGIC[2])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dev_eui")
    ap.add_argument("join_eui")
    ap.add_argument("app_key")
    ap.add_argument("-o", "--output", help="the UF2 file to write")
    ap.add_argument("--hex", action="store_true", help="print the block in hex instead")
    a = ap.parse_args()
    b = block(parse_hex("DEV_EUI", a.dev_eui, 8), parse_hex("JOIN_EUI", a.join_eui, 8),
              parse_hex("APP_KEY", a.app_key, 16))
    if a.hex:
        print(b.hex())
        return
    if not a.output:
        sys.exit("keyblock: give -o FILE.uf2 (or --hex)")
    with open(a.output, "wb") as f:
        f.write(uf2(b, KEY_PAGE_ADDR))
    print(f"{a.output}: key page at {KEY_PAGE_ADDR:#010x}, DevEUI {a.dev_eui}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prints the flash and static RAM an RP2040 firmware ELF uses and fails over budget.

    python3 tools/firmware_size.py FIRMWARE.elf [--flash-max BYTES] [--ram-max BYTES]

Flash: every allocated section placed in the XIP flash window (boot2, vector table, code,
read-only data) plus the initial values of `.data`. Static RAM: allocated sections in
SRAM (`.data`, `.bss`, `.uninit`, which includes the embassy task pool). The stack is not
static and is not counted.
"""
import argparse
import struct
import sys

FLASH = (0x10000000, 0x11000000)
SRAM = (0x20000000, 0x20042000)
SHF_ALLOC = 0x2
SHT_NOBITS = 8


def sections(path):
    with open(path, "rb") as f:
        elf = f.read()
    if elf[:4] != b"\x7fELF" or elf[4] != 1 or elf[5] != 1:
        sys.exit(f"{path}: not a 32-bit little-endian ELF")
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
    heads = [struct.unpack_from("<10I", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx]
    for h in heads:
        name_off, typ, flags, addr, _off, size = h[:6]
        start = strtab[4] + name_off
        name = elf[start:elf.index(b"\0", start)].decode()
        yield name, typ, flags, addr, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("elf")
    ap.add_argument("--flash-max", type=int, default=128 * 1024)
    ap.add_argument("--ram-max", type=int, default=16 * 1024)
    a = ap.parse_args()
    flash = ram = 0
    rows = []
    for name, typ, flags, addr, size in sections(a.elf):
        if not flags & SHF_ALLOC or size == 0:
            continue
        if FLASH[0] <= addr < FLASH[1]:
            flash += size
            rows.append((name, "flash", size))
        elif SRAM[0] <= addr < SRAM[1]:
            ram += size
            if typ != SHT_NOBITS:  # .data: its initial values live in flash too
                flash += size
            rows.append((name, "ram" if typ == SHT_NOBITS else "ram+flash", size))
    for name, where, size in rows:
        print(f"  {name:<16} {where:<10} {size:>8} B")
    print(f"flash: {flash} B ({flash / 1024:.1f} KiB of {a.flash_max // 1024} KiB budget)")
    print(f"static RAM: {ram} B ({ram / 1024:.1f} KiB of {a.ram_max // 1024} KiB budget)")
    over = []
    if flash > a.flash_max:
        over.append(f"flash {flash} B > {a.flash_max} B")
    if ram > a.ram_max:
        over.append(f"static RAM {ram} B > {a.ram_max} B")
    if over:
        sys.exit("over budget: " + ", ".join(over))


if __name__ == "__main__":
    main()

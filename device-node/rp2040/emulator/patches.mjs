// Three gaps in rp2040js 1.4.1 that an embassy-rp firmware runs into, closed from outside
// the package (nothing in node_modules is edited). Each one is explained in README.md.

// DMA register offset of CHAN_ABORT (RP2040 datasheet 2.5.7)
const DMA_CHAN_ABORT = 0x444;
// ROSC register offsets (datasheet 2.17.8)
const ROSC_CTRL = 0x00;
const ROSC_STATUS = 0x18;
const ROSC_RANDOMBIT = 0x1c;
const ROSC_COUNT = 0x20;
const ROSC_STATUS_STABLE = 1 << 31;
const ROSC_STATUS_ENABLED = 1 << 12;

/**
 * 1. SPI: rp2040js completes a byte the moment it is written, so a transmit DMA channel
 * fills the 8-deep receive FIFO faster than the receive channel drains it, the overrun
 * drops bytes and a multi-byte read waits forever. Here each byte completes after 8 SPI
 * clocks, through a clock alarm, as on the chip.
 * `device(byte) -> byte` is the slave on the bus.
 */
export function spiWithByteTiming(mcu, spi, device) {
  const alarm = mcu.clock.createAlarm(() => spi.completeTransmit(pending));
  let pending = 0;
  spi.onTransmit = (value) => {
    pending = device(value);
    const hz = spi.clockFrequency || 1e6;
    alarm.schedule(Math.ceil((8 * 1e9) / hz));
  };
}

/**
 * 2. ROSC: not emulated; RANDOMBIT reads as all ones, so a ring-oscillator RNG (embassy-rp's
 * `RoscRng`, which seeds lorawan-device's DevNonce and channel choice) is constant. Here
 * the ROSC answers as running and stable, and RANDOMBIT gives bits from a seeded
 * generator (seeded: a failing run can be repeated bit for bit).
 */
export function roscWithRandomBits(mcu, seed) {
  let state = seed >>> 0 || 0x9e3779b9;
  const nextBit = () => {
    // xorshift32
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state & 1;
  };
  const regs = new Map([[ROSC_CTRL, 0xfab << 12]]);
  const rosc = {
    readUint32(offset) {
      switch (offset) {
        case ROSC_STATUS:
          return (ROSC_STATUS_STABLE | ROSC_STATUS_ENABLED) >>> 0;
        case ROSC_RANDOMBIT:
          return nextBit();
        case ROSC_COUNT:
          return 0;
        default:
          return regs.get(offset) ?? 0;
      }
    },
    writeUint32(offset, value) {
      regs.set(offset, value >>> 0);
    },
    writeUint32Atomic(offset, value, atomicType) {
      const old = this.readUint32(offset);
      const next = [value, old ^ value, old | value, old & ~value][atomicType] ?? value;
      this.writeUint32(offset, next >>> 0);
    },
  };
  mcu.peripherals[0x40060] = rosc;
}

/**
 * 3. DMA CHAN_ABORT: reads are not implemented (they return 0xffffffff). embassy-rp aborts
 * a channel with an atomic set on that register, which rp2040js turns into
 * read-modify-write: all ones, so every channel is aborted, including the other SPI
 * direction mid-transfer. Reads return 0, as on the chip once the abort is done.
 */
export function dmaAbortReadsZero(mcu) {
  const dma = mcu.dma;
  const read = dma.readUint32.bind(dma);
  dma.readUint32 = (offset) => (offset === DMA_CHAN_ABORT ? 0 : read(offset));
}

/**
 * 4a. XIP_CTRL (the flash cache's registers at 0x14000000) is not mapped, so reads give
 * 0xffffffff. embassy-rp waits for `STREAM_CTR == 0` (no background flash stream) before it
 * touches the flash, and would wait forever. Here the cache is idle: the counters read 0,
 * STAT reads FIFO empty and flush ready.
 */
export function xipCtrlIdle(mcu) {
  const XIP_STAT = 0x08;
  const regs = new Map([[0x00, 0x3]]); // CTRL: enabled, error on bad write
  mcu.peripherals[0x14000] = {
    readUint32(offset) {
      return offset === XIP_STAT ? 0x3 : (regs.get(offset) ?? 0);
    },
    writeUint32(offset, value) {
      regs.set(offset, value >>> 0);
    },
    writeUint32Atomic(offset, value) {
      this.writeUint32(offset, value);
    },
  };
}

/**
 * 4b. Flash programming: the boot ROM's flash routines drive the QSPI flash through the SSI,
 * which rp2040js models only far enough to boot (no erase or program), so a firmware that
 * saves state would spin on the flash's status. The ROM entry points are replaced by
 * `BKPT` and carried out here on the emulated flash, with NOR semantics: erase sets a
 * sector to 0xff, program can only clear bits. Returns the handler for `onBreak`, which
 * answers whether the break was one of these.
 */
export function romFlashRoutines(mcu) {
  const rom = new DataView(mcu.bootrom.buffer);
  const tablePtr = rom.getUint16(0x14, true);
  const lookup = new Map();
  for (let at = tablePtr; ; at += 4) {
    const code = rom.getUint16(at, true);
    if (code === 0) break;
    lookup.set(String.fromCharCode(code & 0xff, code >> 8), rom.getUint16(at + 2, true) & ~1);
  }
  const FLASH_SECTOR = 4096;
  const routines = {
    // connect_internal_flash, flash_exit_xip, flash_flush_cache, flash_enter_cmd_xip:
    // nothing to do on a flash that is always readable
    IF: () => {},
    EX: () => {},
    FC: () => {},
    CX: () => {},
    // flash_range_erase(addr, count, block_size, block_cmd)
    RE: (r) => {
      const [offset, count] = [r[0] >>> 0, r[1] >>> 0];
      if (offset % FLASH_SECTOR || count % FLASH_SECTOR) {
        throw new Error(`flash_range_erase(${offset.toString(16)}, ${count}): not whole sectors`);
      }
      mcu.flash.fill(0xff, offset, offset + count);
    },
    // flash_range_program(addr, data, count)
    RP: (r) => {
      const [offset, data, count] = [r[0] >>> 0, r[1] >>> 0, r[2] >>> 0];
      for (let i = 0; i < count; i++) {
        mcu.flash[offset + i] &= mcu.readUint8(data + i);
      }
    },
  };
  const hooks = new Map();
  for (const [name, run] of Object.entries(routines)) {
    const addr = lookup.get(name);
    if (addr === undefined) {
      throw new Error(`boot ROM has no ${name} routine in its function table`);
    }
    rom.setUint16(addr, 0xbe00, true); // BKPT #0
    hooks.set(addr, run);
  }
  return (core) => {
    const at = (core.PC - 2) >>> 0;
    const run = hooks.get(at);
    if (!run) return false;
    run(core.registers);
    core.PC = core.registers[14] & ~1; // return to the caller (LR)
    return true;
  };
}

#!/usr/bin/env node
// Runs a Raspberry Pi Pico firmware (UF2 files, as a user drops them on the board) in the
// rp2040js emulator, with a simulated SX1276 on SPI0 wired as device-node/rp2040's README
// says: GP16 MISO, GP17 NSS, GP18 SCK, GP19 MOSI, GP20 RESET, GP21 DIO0, GP22 DIO1.
// Time is virtual: while the firmware sleeps, the clock jumps to its next alarm.
//
// It speaks JSON lines. Out (stdout), one event a line:
//   {"ev":"log","hex":..}          bytes from the firmware's defmt RTT up-buffer 0
//   {"ev":"tx","id":n,"t_ms":..,"phy":hex,"freq","sf","bw","cr","crc","explicit_header",
//        "ldro","preamble","invert_iq","toa_us"}
//                                  a frame transmitted; the emulation pauses until a reply
//   {"ev":"window",..}             a receive window closed: "received" or "timeout"
//   {"ev":"gpio","pin":n,"high":b} an output the firmware drives (GP15 actuator, GP25 LED)
//   {"ev":"time","t_ms":..}        every virtual second, so a driver can see progress
//   {"ev":"end","reason":..}       the run is over (time limit, or stuck with nothing due)
// In (stdin), one command a line:
//   {"cmd":"reply","id":n,"down":null}        nothing for that transmission's windows
//   {"cmd":"reply","id":n,"down":{"phy":hex,"delay_ms":1000,"freq":..,"sf":..,"bw":..}}
//                                  a frame on the air delay_ms after the transmission ended
//   {"cmd":"stop"}
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { RP2040, Simulator } from 'rp2040js';
import { SX1276 } from './sx1276.mjs';
import {
  dmaAbortReadsZero,
  romFlashRoutines,
  roscWithRandomBits,
  spiWithByteTiming,
  xipCtrlIdle,
} from './patches.mjs';

const PINS = { miso: 16, nss: 17, sck: 18, mosi: 19, reset: 20, dio0: 21, dio1: 22 };
const WATCHED_OUTPUTS = [15, 25];
const FLASH_START = 0x10000000;
const RAM_START = 0x20000000;
const RP2040_FAMILY = 0xe48bff56;

const { values: args } = parseArgs({
  options: {
    uf2: { type: 'string', multiple: true },
    bootrom: { type: 'string', default: new URL('./bootrom-b1.bin', import.meta.url).pathname },
    seed: { type: 'string', default: '1' },
    'max-seconds': { type: 'string', default: '3600' },
  },
});
if (!args.uf2?.length) {
  console.error('usage: harness.mjs --uf2 firmware.uf2 [--uf2 keys.uf2] [--seed N] [--max-seconds S]');
  process.exit(2);
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

/** Writes a UF2 file's blocks into the emulated flash, as the RPI-RP2 drive does. */
function loadUf2(path, flash) {
  const data = readFileSync(path);
  if (data.length === 0 || data.length % 512 !== 0) {
    throw new Error(`${path}: ${data.length} bytes is not a whole number of 512-byte UF2 blocks`);
  }
  for (let off = 0; off < data.length; off += 512) {
    const block = data.subarray(off, off + 512);
    const word = (i) => block.readUInt32LE(i);
    if (word(0) !== 0x0a324655 || word(4) !== 0x9e5d5157 || word(508) !== 0x0ab16f30) {
      throw new Error(`${path}: block ${off / 512} has no UF2 magic`);
    }
    if (word(8) & 0x2000 && word(28) !== RP2040_FAMILY) {
      throw new Error(`${path}: block ${off / 512} is for family ${word(28).toString(16)}, not RP2040`);
    }
    const addr = word(12);
    const size = word(16);
    if (addr < FLASH_START || addr + size > FLASH_START + flash.length || size > 476) {
      throw new Error(`${path}: block ${off / 512} writes ${size} bytes at ${addr.toString(16)}, outside flash`);
    }
    flash.set(block.subarray(32, 32 + size), addr - FLASH_START);
  }
}

const simulator = new Simulator();
const mcu = simulator.rp2040;
const clock = simulator.clock;
mcu.logger.currentLogLevel = 3; // errors only (rp2040js warns on every unimplemented register)

const rom = readFileSync(args.bootrom);
mcu.loadBootrom(new Uint32Array(rom.buffer, rom.byteOffset, rom.length / 4));
for (const path of args.uf2) {
  loadUf2(path, mcu.flash);
}

roscWithRandomBits(mcu, Number(args.seed));
dmaAbortReadsZero(mcu);
xipCtrlIdle(mcu);
const flashRoutine = romFlashRoutines(mcu);
let halted = null;
mcu.onBreak = (code) => {
  if (!flashRoutine(mcu.core)) {
    // panic-probe ends a panic with UDF; the log has already said why
    const pc = ((mcu.core.PC - 2) >>> 0).toString(16);
    halted = `the firmware halted (breakpoint or UDF #${code} at 0x${pc}): a panic or a hard fault`;
  }
};

// The on-chip temperature sensor (ADC input 4): 0.706 V is 27 °C (datasheet 4.9.5).
mcu.adc.channelValues[4] = Math.round((0.706 / 3.3) * 4095);

const radio = new SX1276(clock, { dio0: mcu.gpio[PINS.dio0], dio1: mcu.gpio[PINS.dio1] });
spiWithByteTiming(mcu, mcu.spi[0], (byte) => radio.transfer(byte));
mcu.gpio[PINS.nss].addListener((state) => radio.setSelected(state === 0));
mcu.gpio[PINS.reset].addListener((state) => radio.setReset(state === 0));
for (const pin of WATCHED_OUTPUTS) {
  mcu.gpio[pin].addListener((state, old) => {
    if ((state === 0 || state === 1) && state !== old) {
      emit({ ev: 'gpio', pin, high: state === 1, t_ms: clock.nanos / 1e6 });
    }
  });
}

// --- transmissions wait for the driver's reply -------------------------------------------
let txCount = 0;
let awaiting = null; // id of the transmission whose reply is due
radio.onTransmit = ({ phy, modulation: m, toaUs, endNs }) => {
  txCount += 1;
  awaiting = txCount;
  emit({
    ev: 'tx',
    id: txCount,
    t_ms: endNs / 1e6,
    phy: Buffer.from(phy).toString('hex'),
    freq: m.freq,
    sf: m.sf,
    bw: m.bw,
    cr: m.cr,
    crc: m.crc,
    explicit_header: m.explicitHeader,
    ldro: m.ldro,
    preamble: m.preamble,
    invert_iq: m.invertIqTx,
    toa_us: toaUs,
  });
};
radio.onWindow = (w) => {
  emit({
    ev: 'window',
    mode: w.mode,
    result: w.result,
    open_ms: w.openNs / 1e6,
    close_ms: w.endNs / 1e6,
    freq: w.modulation.freq,
    sf: w.modulation.sf,
    bw: w.modulation.bw,
    symbols: w.symbols,
    length: w.length ?? 0,
  });
};

let stopped = false;
const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    console.error(`harness: not JSON on stdin: ${line}`);
    return;
  }
  if (msg.cmd === 'stop') {
    stopped = true;
  } else if (msg.cmd === 'reply' && msg.id === awaiting) {
    if (msg.down) {
      const d = msg.down;
      radio.schedule(
        { phy: Uint8Array.from(Buffer.from(d.phy, 'hex')), freq: d.freq, sf: d.sf, bw: d.bw },
        d.delay_ms * 1e6,
      );
    }
    awaiting = null;
  } else {
    console.error(`harness: unexpected command ${line} (awaiting ${awaiting})`);
  }
});
input.on('close', () => (stopped = true));

// --- the firmware's defmt log, from its RTT control block ---------------------------------
let rttBlock = null;
function findRtt() {
  const id = Buffer.from('SEGGER RTT\0');
  const at = Buffer.from(mcu.sram.buffer, mcu.sram.byteOffset, mcu.sram.length).indexOf(id);
  return at >= 0 ? RAM_START + at : null;
}
function drainRtt() {
  if (rttBlock === null) {
    rttBlock = findRtt();
    if (rttBlock === null) {
      return;
    }
  }
  const up = rttBlock + 24; // after id[16], max_up_buffers, max_down_buffers
  const buf = mcu.readUint32(up + 4);
  const size = mcu.readUint32(up + 8);
  const write = mcu.readUint32(up + 12);
  let read = mcu.readUint32(up + 16);
  if (size === 0 || write === read || write >= size || read >= size) {
    return;
  }
  const bytes = [];
  while (read !== write) {
    bytes.push(mcu.readUint8(buf + read));
    read = (read + 1) % size;
  }
  mcu.writeUint32(up + 16, read);
  emit({ ev: 'log', hex: Buffer.from(bytes).toString('hex') });
}

// --- the run loop --------------------------------------------------------------------------
const CYCLE_NS = 1e9 / 125e6;
const maxNs = Number(args['max-seconds']) * 1e9;
let nextSecond = 1e9;
mcu.core.PC = FLASH_START; // boot stage 2 at the start of flash, as the boot ROM would

function runChunk() {
  const { core } = mcu;
  for (let i = 0; i < 200_000 && awaiting === null; i++) {
    if (halted) {
      return halted;
    }
    if (core.waiting) {
      const ns = clock.nanosToNextAlarm;
      if (ns <= 0 && !clock.nextAlarm) {
        return 'stuck: the firmware waits for an event and nothing is scheduled';
      }
      clock.tick(Math.max(ns, 0));
    } else {
      clock.tick(core.executeInstruction() * CYCLE_NS);
    }
  }
  return null;
}

function loop() {
  if (stopped) {
    drainRtt();
    emit({ ev: 'end', reason: 'stopped', t_ms: clock.nanos / 1e6 });
    process.exit(0);
  }
  if (awaiting === null) {
    const stuck = runChunk();
    drainRtt();
    if (clock.nanos >= nextSecond) {
      nextSecond = (Math.floor(clock.nanos / 1e9) + 1) * 1e9;
      emit({ ev: 'time', t_ms: clock.nanos / 1e6, pc: mcu.core.PC });
    }
    if (stuck || clock.nanos >= maxNs) {
      emit({ ev: 'end', reason: stuck ?? 'time limit', t_ms: clock.nanos / 1e6 });
      process.exit(0);
    }
  }
  setImmediate(loop);
}
loop();

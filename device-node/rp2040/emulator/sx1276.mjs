// A simulated Semtech SX1276 in LoRa mode, as the firmware sees it over SPI and its
// DIO0/DIO1/RESET lines: the registers lora-phy's sx127x driver uses, the 256-byte FIFO,
// TX, RX single (with its symbol timeout) and RX continuous, the IRQ flags with their mask,
// and the DIO mapping of RegDioMapping1. Time on air follows the same rules as
// gateway-config's `LoraParams::time_on_air` (Semtech AN1200.13); the test checks every
// transmission's figure against that implementation.
//
// Frames the firmware transmits leave through `onTransmit`; frames for it are put on the
// air with `schedule()` and are received only if a receive window with the same
// frequency, spreading factor, bandwidth and inverted IQ is open when their preamble comes.

const REG = {
  FIFO: 0x00,
  OP_MODE: 0x01,
  FRF_MSB: 0x06,
  FRF_MID: 0x07,
  FRF_LSB: 0x08,
  FIFO_ADDR_PTR: 0x0d,
  FIFO_TX_BASE: 0x0e,
  FIFO_RX_BASE: 0x0f,
  FIFO_RX_CURRENT: 0x10,
  IRQ_FLAGS_MASK: 0x11,
  IRQ_FLAGS: 0x12,
  RX_NB_BYTES: 0x13,
  PKT_SNR: 0x19,
  PKT_RSSI: 0x1a,
  MODEM_CONFIG1: 0x1d,
  MODEM_CONFIG2: 0x1e,
  SYMB_TIMEOUT_LSB: 0x1f,
  PREAMBLE_MSB: 0x20,
  PREAMBLE_LSB: 0x21,
  PAYLOAD_LENGTH: 0x22,
  MODEM_CONFIG3: 0x26,
  INVERT_IQ: 0x33,
  INVERT_IQ2: 0x3b,
  SYNC_WORD: 0x39,
  DIO_MAPPING1: 0x40,
  VERSION: 0x42,
};

// RegIrqFlags bits
export const IRQ = {
  RX_TIMEOUT: 0x80,
  RX_DONE: 0x40,
  CRC_ERROR: 0x20,
  VALID_HEADER: 0x10,
  TX_DONE: 0x08,
  CAD_DONE: 0x04,
  FHSS: 0x02,
  CAD_DETECTED: 0x01,
};

// RegOpMode modes (bits 2..0)
const MODE = { SLEEP: 0, STANDBY: 1, FSTX: 2, TX: 3, FSRX: 4, RX_CONTINUOUS: 5, RX_SINGLE: 6, CAD: 7 };
const MODE_NAMES = ['sleep', 'standby', 'fstx', 'tx', 'fsrx', 'rx-continuous', 'rx-single', 'cad'];

const BANDWIDTHS = [7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000];

// Preamble symbols the receiver needs to lock on (of the 8 LoRaWAN sends).
const PREAMBLE_LOCK_SYMBOLS = 4;

/** LoRa time on air in microseconds (Semtech AN1200.13, as gateway-config computes it). */
export function timeOnAirUs({ sf, bw, cr, preamble, explicitHeader, crc, ldro }, length) {
  const tSym = (2 ** sf * 1e6) / bw;
  const de = ldro ? 1 : 0;
  const ih = explicitHeader ? 0 : 1;
  const num = 8 * length - 4 * sf + 28 + 16 * (crc ? 1 : 0) - 20 * ih;
  const den = 4 * (sf - 2 * de);
  const payloadSymbols = 8 + Math.max(Math.ceil(num / den) * (cr + 4), 0);
  return Math.round((preamble + 4.25) * tSym + payloadSymbols * tSym);
}

function resetRegisters() {
  const r = new Uint8Array(128);
  r[REG.OP_MODE] = 0x09; // FSK/OOK, low-frequency mode, standby
  r[REG.FRF_MSB] = 0x6c;
  r[REG.FRF_MID] = 0x80;
  r[REG.FIFO_TX_BASE] = 0x80;
  r[REG.MODEM_CONFIG1] = 0x72;
  r[REG.MODEM_CONFIG2] = 0x70;
  r[REG.SYMB_TIMEOUT_LSB] = 0x64;
  r[REG.PREAMBLE_LSB] = 0x08;
  r[REG.PAYLOAD_LENGTH] = 0x01;
  r[REG.MODEM_CONFIG3] = 0x04;
  r[REG.INVERT_IQ] = 0x27;
  r[REG.INVERT_IQ2] = 0x1d;
  r[REG.SYNC_WORD] = 0x12;
  r[REG.VERSION] = 0x12; // SX1276 silicon revision
  return r;
}

export class SX1276 {
  /**
   * @param clock rp2040js SimulationClock (virtual time, nanoseconds)
   * @param pins { dio0, dio1 }: rp2040js GPIOPin inputs the model drives
   */
  constructor(clock, pins) {
    this.clock = clock;
    this.pins = pins;
    this.regs = resetRegisters();
    this.fifo = new Uint8Array(256);
    this.inReset = false;
    this.selected = false;
    this.address = null;
    this.write = false;
    this.alarm = clock.createAlarm(() => this.onAlarm());
    this.alarmAction = null;
    this.airFrames = []; // frames on the air for this node: { atNs, freq, sf, bw, phy }
    this.onTransmit = () => {};
    this.onWindow = () => {};
    this.updateDio();
  }

  get nowNs() {
    return this.clock.nanos;
  }

  get mode() {
    return this.regs[REG.OP_MODE] & 0x07;
  }

  get loraMode() {
    return !!(this.regs[REG.OP_MODE] & 0x80);
  }

  /** The modulation the registers describe now. */
  modulation() {
    const r = this.regs;
    const frf = (r[REG.FRF_MSB] << 16) | (r[REG.FRF_MID] << 8) | r[REG.FRF_LSB];
    return {
      // the channel as a network server names it: Frf steps are 61 Hz, channels 100 Hz apart
      freq: Math.round((frf * 32e6) / 2 ** 19 / 100) * 100,
      sf: r[REG.MODEM_CONFIG2] >> 4,
      bw: BANDWIDTHS[r[REG.MODEM_CONFIG1] >> 4] ?? 0,
      cr: (r[REG.MODEM_CONFIG1] >> 1) & 0x07,
      explicitHeader: !(r[REG.MODEM_CONFIG1] & 0x01),
      crc: !!(r[REG.MODEM_CONFIG2] & 0x04),
      ldro: !!(r[REG.MODEM_CONFIG3] & 0x08),
      preamble: (r[REG.PREAMBLE_MSB] << 8) | r[REG.PREAMBLE_LSB],
      // inverted IQ reception takes both registers (AN1200.23): 0x33 bit 6 and 0x3B = 0x19
      invertIqRx: !!(r[REG.INVERT_IQ] & 0x40) && r[REG.INVERT_IQ2] === 0x19,
      // bit 0 is InvertIQ TX *off* (AN1200.23: 0x27 in RegInvertIQ is normal IQ both ways)
      invertIqTx: !(r[REG.INVERT_IQ] & 0x01),
      syncWord: r[REG.SYNC_WORD],
    };
  }

  // --- control lines -------------------------------------------------------------------

  /** NRESET: held low, the chip is in reset; released, it starts with reset values. */
  setReset(low) {
    if (low && !this.inReset) {
      this.inReset = true;
      this.cancelAlarm();
      this.regs = resetRegisters();
      this.updateDio();
    } else if (!low) {
      this.inReset = false;
    }
  }

  /** NSS: a falling edge starts an SPI transaction, a rising edge ends it. */
  setSelected(selected) {
    this.selected = selected;
    this.address = null;
  }

  /** One byte on the bus; returns the byte the chip shifts out. */
  transfer(mosi) {
    if (!this.selected || this.inReset) {
      return 0;
    }
    if (this.address === null) {
      this.write = !!(mosi & 0x80);
      this.address = mosi & 0x7f;
      return 0;
    }
    const addr = this.address;
    let miso = 0;
    if (addr === REG.FIFO) {
      const ptr = this.regs[REG.FIFO_ADDR_PTR];
      if (this.write) {
        this.fifo[ptr] = mosi;
      } else {
        miso = this.fifo[ptr];
      }
      this.regs[REG.FIFO_ADDR_PTR] = (ptr + 1) & 0xff;
    } else {
      if (this.write) {
        this.writeRegister(addr, mosi);
      } else {
        miso = this.regs[addr];
      }
      this.address = (addr + 1) & 0x7f;
    }
    return miso;
  }

  writeRegister(addr, value) {
    switch (addr) {
      case REG.IRQ_FLAGS:
        this.regs[addr] &= ~value; // write 1 to clear
        this.updateDio();
        return;
      case REG.OP_MODE: {
        const old = this.regs[addr];
        // LongRangeMode changes only in sleep mode
        if ((old & 0x07) !== MODE.SLEEP) {
          value = (value & 0x7f) | (old & 0x80);
        }
        this.regs[addr] = value;
        if ((value & 0x07) !== (old & 0x07)) {
          this.enterMode(value & 0x07);
        }
        return;
      }
      case REG.VERSION:
      case REG.RX_NB_BYTES:
      case REG.FIFO_RX_CURRENT:
      case REG.PKT_SNR:
      case REG.PKT_RSSI:
        return; // read-only
      default:
        this.regs[addr] = value;
    }
  }

  // --- modes ---------------------------------------------------------------------------

  enterMode(mode) {
    this.cancelAlarm();
    if (!this.loraMode && (mode === MODE.TX || mode === MODE.RX_SINGLE || mode === MODE.RX_CONTINUOUS)) {
      throw new Error(`SX1276: ${MODE_NAMES[mode]} requested in FSK mode; the model emulates LoRa only`);
    }
    switch (mode) {
      case MODE.TX:
        return this.startTx();
      case MODE.RX_SINGLE:
      case MODE.RX_CONTINUOUS:
        return this.startRx(mode === MODE.RX_SINGLE);
      case MODE.CAD:
        // nothing on the air in this model: CadDone without activity after ~2 symbols
        this.setAlarm(2 * this.symbolNs(), () => this.raise(IRQ.CAD_DONE));
        return;
      default:
    }
  }

  symbolNs() {
    const m = this.modulation();
    return (2 ** m.sf * 1e9) / m.bw;
  }

  startTx() {
    const m = this.modulation();
    const length = this.regs[REG.PAYLOAD_LENGTH];
    const base = this.regs[REG.FIFO_TX_BASE];
    const phy = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      phy[i] = this.fifo[(base + i) & 0xff];
    }
    const toaUs = timeOnAirUs(m, length);
    const startNs = this.nowNs;
    this.setAlarm(toaUs * 1000, () => {
      this.setModeBits(MODE.STANDBY);
      this.raise(IRQ.TX_DONE);
      this.onTransmit({ phy, modulation: m, toaUs, startNs, endNs: this.nowNs });
    });
  }

  /** A frame for this node goes on the air `delayNs` from now. */
  schedule(frame, delayNs) {
    this.airFrames.push({ ...frame, atNs: this.nowNs + delayNs });
  }

  startRx(single) {
    const m = this.modulation();
    const openNs = this.nowNs;
    const tSym = this.symbolNs();
    const timeout = ((this.regs[REG.MODEM_CONFIG2] & 0x03) << 8) | this.regs[REG.SYMB_TIMEOUT_LSB];
    const closeNs = single ? openNs + timeout * tSym : Infinity;
    // the first frame on this channel whose preamble the receiver can still lock on
    const lockable = (f) =>
      f.freq === m.freq &&
      f.sf === m.sf &&
      f.bw === m.bw &&
      m.invertIqRx &&
      f.atNs + (8 - PREAMBLE_LOCK_SYMBOLS) * tSym >= openNs &&
      f.atNs <= closeNs;
    const index = this.airFrames.findIndex(lockable);
    const window = { mode: single ? 'rx-single' : 'rx-continuous', openNs, modulation: m, symbols: timeout };
    if (index >= 0) {
      const frame = this.airFrames.splice(index, 1)[0];
      const toaUs = timeOnAirUs(
        { sf: frame.sf, bw: frame.bw, cr: 1, preamble: 8, explicitHeader: true, crc: false, ldro: m.ldro },
        frame.phy.length,
      );
      const doneNs = Math.max(frame.atNs, openNs) + toaUs * 1000 - openNs;
      this.setAlarm(doneNs, () => {
        const base = this.regs[REG.FIFO_RX_BASE];
        frame.phy.forEach((b, i) => (this.fifo[(base + i) & 0xff] = b));
        this.regs[REG.FIFO_RX_CURRENT] = base;
        this.regs[REG.RX_NB_BYTES] = frame.phy.length;
        this.regs[REG.PKT_SNR] = (7 * 4) & 0xff;
        this.regs[REG.PKT_RSSI] = 60; // about -97 dBm at 868 MHz
        if (single) {
          this.setModeBits(MODE.STANDBY);
        }
        this.raise(IRQ.VALID_HEADER | IRQ.RX_DONE);
        this.onWindow({ ...window, result: 'received', length: frame.phy.length, endNs: this.nowNs });
      });
    } else if (single) {
      this.setAlarm(closeNs - openNs, () => {
        this.setModeBits(MODE.STANDBY);
        this.raise(IRQ.RX_TIMEOUT);
        this.onWindow({ ...window, result: 'timeout', endNs: this.nowNs });
      });
    }
    // frames whose time has passed can no longer be received
    this.airFrames = this.airFrames.filter((f) => f.atNs >= openNs - 8 * tSym);
  }

  setModeBits(mode) {
    this.regs[REG.OP_MODE] = (this.regs[REG.OP_MODE] & 0xf8) | mode;
  }

  // --- interrupts ----------------------------------------------------------------------

  raise(bits) {
    // a masked IRQ does not set its flag
    this.regs[REG.IRQ_FLAGS] |= bits & ~this.regs[REG.IRQ_FLAGS_MASK];
    this.updateDio();
  }

  updateDio() {
    const flags = this.regs[REG.IRQ_FLAGS];
    const map = this.regs[REG.DIO_MAPPING1];
    const dio0Source = [IRQ.RX_DONE, IRQ.TX_DONE, IRQ.CAD_DONE, 0][(map >> 6) & 3];
    const dio1Source = [IRQ.RX_TIMEOUT, IRQ.FHSS, IRQ.CAD_DETECTED, 0][(map >> 4) & 3];
    this.pins.dio0.setInputValue(!!(flags & dio0Source));
    this.pins.dio1.setInputValue(!!(flags & dio1Source));
  }

  // --- timing --------------------------------------------------------------------------

  setAlarm(deltaNs, action) {
    this.alarmAction = action;
    this.alarm.schedule(Math.max(0, Math.round(deltaNs)));
  }

  cancelAlarm() {
    this.alarm.cancel();
    this.alarmAction = null;
  }

  onAlarm() {
    const action = this.alarmAction;
    this.alarmAction = null;
    if (action) {
      action();
    }
  }
}

//! The Modbus TCP bridge: the device's signals as a few range requests per
//! scan, and writes as one request per contiguous run of outputs.
//!
//! Signals of one table that touch or overlap are read with one request
//! (up to the PDU's 125 registers or 2,000 bits), so a process image of 64
//! holding registers is one round trip. A Modbus exception is an answer,
//! not a failure: the signals of that range read NaN and the sample says
//! `exception` with the code; the link stays up.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

use crate::config::{ModbusConfig, Signal, Table, ValueType, WordOrder};
use crate::link::{Bridge, Reading};

pub struct ModbusBridge {
    config: ModbusConfig,
    ranges: Vec<Range>,
    context: Option<Context>,
}

/// One read request and where its items go.
#[derive(Debug, Clone, PartialEq)]
struct Range {
    table: Table,
    start: u16,
    count: u16,
    /// (index in `read`, offset of its first item in the range).
    members: Vec<(usize, u16)>,
}

impl ModbusBridge {
    pub fn new(config: ModbusConfig) -> ModbusBridge {
        ModbusBridge {
            ranges: ranges(&config.read),
            config,
            context: None,
        }
    }

    fn context(&mut self) -> anyhow::Result<&mut Context> {
        self.context.as_mut().context("not connected")
    }
}

impl Bridge for ModbusBridge {
    async fn connect(&mut self) -> anyhow::Result<()> {
        self.context = None;
        let address = &self.config.address;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address.as_str())
            .await
            .with_context(|| format!("cannot resolve {address}"))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    // One small request at a time: never wait for Nagle.
                    stream.set_nodelay(true)?;
                    let slave = Slave(self.config.unit);
                    self.context = Some(tokio_modbus::client::tcp::attach_slave(stream, slave));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => anyhow::Error::new(e).context(format!("cannot connect to {address}")),
            None => anyhow::anyhow!("{address} resolves to no address"),
        })
    }

    async fn scan(&mut self) -> anyhow::Result<Reading> {
        let signals = self.config.read.clone();
        let ranges = self.ranges.clone();
        let context = self.context()?;
        let mut values = vec![f64::NAN; signals.len()];
        let mut exception = 0;
        for range in &ranges {
            match read_range(context, range).await? {
                Ok(Items::Words(words)) => {
                    for &(i, offset) in &range.members {
                        values[i] = decode(&signals[i], &words[offset as usize..]);
                    }
                }
                Ok(Items::Bits(bits)) => {
                    for &(i, offset) in &range.members {
                        values[i] = if bits[offset as usize] { 1.0 } else { 0.0 };
                    }
                }
                Err(code) if exception == 0 => exception = u8::from(code),
                Err(_) => {}
            }
        }
        Ok(Reading { values, exception })
    }

    async fn write(&mut self, values: &[f64]) -> anyhow::Result<u8> {
        let signals = self.config.write.clone();
        let context = self.context()?;
        let mut exception = 0;
        for run in write_runs(&signals, values) {
            let answer = match run {
                WriteRun::Words(addr, words) if words.len() == 1 => {
                    context.write_single_register(addr, words[0]).await
                }
                WriteRun::Words(addr, words) => {
                    context.write_multiple_registers(addr, &words).await
                }
                WriteRun::Bits(addr, bits) if bits.len() == 1 => {
                    context.write_single_coil(addr, bits[0]).await
                }
                WriteRun::Bits(addr, bits) => context.write_multiple_coils(addr, &bits).await,
            };
            if let Err(code) = answer? {
                exception = exception.max(u8::from(code));
            }
        }
        Ok(exception)
    }

    fn disconnect(&mut self) {
        self.context = None;
    }
}

enum Items {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

async fn read_range(
    context: &mut Context,
    range: &Range,
) -> Result<Result<Items, ExceptionCode>, tokio_modbus::Error> {
    let (start, count) = (range.start, range.count);
    Ok(match range.table {
        Table::Input => context
            .read_input_registers(start, count)
            .await?
            .map(Items::Words),
        Table::Holding => context
            .read_holding_registers(start, count)
            .await?
            .map(Items::Words),
        Table::Coil => context.read_coils(start, count).await?.map(Items::Bits),
        Table::Discrete => context
            .read_discrete_inputs(start, count)
            .await?
            .map(Items::Bits),
    }
    .and_then(|items| match &items {
        // A short answer is the device's fault; treat it like an exception.
        Items::Words(w) if w.len() < count as usize => Err(ExceptionCode::ServerDeviceFailure),
        Items::Bits(b) if b.len() < count as usize => Err(ExceptionCode::ServerDeviceFailure),
        _ => Ok(items),
    }))
}

/// The read requests for `signals`: per table, runs of touching or
/// overlapping signals, each within one request's limit.
fn ranges(signals: &[Signal]) -> Vec<Range> {
    let mut order: Vec<usize> = (0..signals.len()).collect();
    order.sort_by_key(|&i| (signals[i].table, signals[i].addr));
    let mut out: Vec<Range> = Vec::new();
    for i in order {
        let s = &signals[i];
        let end = u32::from(s.addr) + u32::from(s.width());
        match out.last_mut() {
            Some(r)
                if r.table == s.table
                    && u32::from(s.addr) <= u32::from(r.start) + u32::from(r.count)
                    && end - u32::from(r.start) <= u32::from(s.table.max_per_request()) =>
            {
                r.count = r.count.max((end - u32::from(r.start)) as u16);
                r.members.push((i, s.addr - r.start));
            }
            _ => out.push(Range {
                table: s.table,
                start: s.addr,
                count: s.width(),
                members: vec![(i, 0)],
            }),
        }
    }
    out
}

/// A signal's value from its registers.
fn decode(signal: &Signal, words: &[u16]) -> f64 {
    let pair = || {
        let (hi, lo) = match signal.word_order {
            WordOrder::HighFirst => (words[0], words[1]),
            WordOrder::LowFirst => (words[1], words[0]),
        };
        (u32::from(hi) << 16) | u32::from(lo)
    };
    let raw = match signal.value {
        ValueType::U16 => f64::from(words[0]),
        ValueType::I16 => f64::from(words[0] as i16),
        ValueType::U32 => f64::from(pair()),
        ValueType::I32 => f64::from(pair() as i32),
        ValueType::F32 => f64::from(f32::from_bits(pair())),
        ValueType::Bool => f64::from(u8::from(words[0] != 0)),
    };
    raw * signal.scale
}

/// A signal's registers for `value`, rounded and clamped to its type.
fn encode(signal: &Signal, value: f64) -> Vec<u16> {
    let raw = value / signal.scale;
    let split = |bits: u32| {
        let (hi, lo) = ((bits >> 16) as u16, bits as u16);
        match signal.word_order {
            WordOrder::HighFirst => vec![hi, lo],
            WordOrder::LowFirst => vec![lo, hi],
        }
    };
    // `as` from f64 saturates at the type's bounds.
    match signal.value {
        ValueType::U16 => vec![raw.round() as u16],
        ValueType::I16 => vec![raw.round() as i16 as u16],
        ValueType::U32 => split(raw.round() as u32),
        ValueType::I32 => split(raw.round() as i32 as u32),
        ValueType::F32 => split((raw as f32).to_bits()),
        ValueType::Bool => vec![u16::from(raw != 0.0)],
    }
}

enum WriteRun {
    Words(u16, Vec<u16>),
    Bits(u16, Vec<bool>),
}

/// The write requests for `values` (NaN: not written): per table, runs of
/// adjacent outputs.
fn write_runs(signals: &[Signal], values: &[f64]) -> Vec<WriteRun> {
    let mut items: Vec<(Table, u16, u16)> = Vec::new();
    for (s, &v) in signals.iter().zip(values) {
        if v.is_nan() {
            continue;
        }
        for (k, word) in encode(s, v).into_iter().enumerate() {
            items.push((s.table, s.addr + k as u16, word));
        }
    }
    items.sort_by_key(|&(t, a, _)| (t, a));
    items.dedup_by_key(|&mut (t, a, _)| (t, a));
    let mut runs: Vec<(Table, u16, Vec<u16>)> = Vec::new();
    for (table, addr, word) in items {
        match runs.last_mut() {
            Some((t, start, words))
                if *t == table
                    && u32::from(*start) + words.len() as u32 == u32::from(addr)
                    && words.len() < 123 =>
            {
                words.push(word)
            }
            _ => runs.push((table, addr, vec![word])),
        }
    }
    runs.into_iter()
        .map(|(table, addr, words)| match table {
            Table::Coil => WriteRun::Bits(addr, words.iter().map(|w| *w != 0).collect()),
            _ => WriteRun::Words(addr, words),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(name: &str, table: Table, addr: u16, value: ValueType) -> Signal {
        Signal {
            name: name.into(),
            table,
            addr,
            value,
            scale: 1.0,
            word_order: WordOrder::HighFirst,
        }
    }

    #[test]
    fn touching_signals_share_a_request_and_others_do_not() {
        let signals = [
            signal("a", Table::Holding, 0, ValueType::U16),
            signal("b", Table::Input, 5, ValueType::U16),
            signal("c", Table::Holding, 1, ValueType::F32),
            signal("d", Table::Holding, 10, ValueType::U16),
            signal("e", Table::Coil, 3, ValueType::Bool),
            signal("f", Table::Coil, 4, ValueType::Bool),
        ];
        let range = |table, start, count, members: &[(usize, u16)]| Range {
            table,
            start,
            count,
            members: members.to_vec(),
        };
        assert_eq!(
            ranges(&signals),
            vec![
                range(Table::Input, 5, 1, &[(1, 0)]),
                range(Table::Holding, 0, 3, &[(0, 0), (2, 1)]),
                range(Table::Holding, 10, 1, &[(3, 0)]),
                range(Table::Coil, 3, 2, &[(4, 0), (5, 1)]),
            ]
        );
        let many: Vec<Signal> = (0..130)
            .map(|i| signal("r", Table::Holding, i, ValueType::U16))
            .collect();
        let counts: Vec<u16> = ranges(&many).iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![125, 5]);
    }

    #[test]
    fn values_round_trip_through_their_registers() {
        let cases = [
            (ValueType::U16, WordOrder::HighFirst, 0.01, 215.37),
            (ValueType::I16, WordOrder::HighFirst, 0.1, -40.5),
            (ValueType::U32, WordOrder::LowFirst, 1.0, 4_000_000_000.0),
            (ValueType::I32, WordOrder::HighFirst, 1.0, -123_456.0),
            (ValueType::F32, WordOrder::HighFirst, 1.0, 3.5),
        ];
        for (value, word_order, scale, x) in cases {
            let s = Signal {
                scale,
                word_order,
                ..signal("x", Table::Holding, 0, value)
            };
            let back = decode(&s, &encode(&s, x));
            assert!(
                (back - x).abs() <= scale / 2.0 + 1e-9,
                "{value:?}: {x} -> {back}"
            );
        }
        let s = signal("x", Table::Holding, 0, ValueType::U16);
        assert_eq!(encode(&s, -5.0), vec![0], "clamped at the type's bounds");
        assert_eq!(encode(&s, 1e9), vec![u16::MAX]);
    }

    #[test]
    fn writes_skip_nan_and_join_adjacent_outputs() {
        let signals = [
            signal("a", Table::Holding, 10, ValueType::U16),
            signal("b", Table::Holding, 11, ValueType::U16),
            signal("c", Table::Holding, 20, ValueType::U16),
            signal("d", Table::Coil, 0, ValueType::Bool),
        ];
        let runs = write_runs(&signals, &[1.0, 2.0, f64::NAN, 1.0]);
        let shape: Vec<String> = runs
            .iter()
            .map(|r| match r {
                WriteRun::Words(a, w) => format!("words@{a}:{w:?}"),
                WriteRun::Bits(a, b) => format!("bits@{a}:{b:?}"),
            })
            .collect();
        assert_eq!(shape, vec!["words@10:[1, 2]", "bits@0:[true]"]);
    }
}

//! Resource probes: what a server measures about itself once a second.

/// One measurement of the whole machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// CPU in use across all cores, in percent of one core (0 ..= cores × 100).
    pub cpu_percent: f32,
    pub mem_bytes_used: u64,
}

/// What the machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Logical cores × 100.
    pub cpu_capacity_percent: u32,
    pub mem_capacity_bytes: u64,
}

pub trait Probe: Send + Sync + 'static {
    fn capacity(&self) -> Capacity;
    fn sample(&mut self) -> Sample;
}

/// A `--probe` value that does not parse: the value and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid probe = {value:?}: {reason}")]
pub struct ProbeSpecError {
    pub value: String,
    pub reason: String,
}

/// A parsed `--probe` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProbeSpec {
    System,
    Fixed { cpu_percent: f32, mem_bytes_used: u64 },
}

impl ProbeSpec {
    pub fn parse(s: &str) -> Result<Self, ProbeSpecError> {
        let bad = |reason: &str| ProbeSpecError { value: s.to_string(), reason: reason.to_string() };
        if s == "system" {
            return Ok(ProbeSpec::System);
        }
        let rest = s.strip_prefix("fixed:").ok_or_else(|| bad("expected `system` or `fixed:cpu=PCT,mem=BYTES`"))?;
        let (mut cpu, mut mem) = (None, None);
        for part in rest.split(',') {
            match part.split_once('=') {
                Some(("cpu", v)) => {
                    let v: f32 = v.parse().map_err(|_| bad("cpu must be a number of percent"))?;
                    if !(0.0..=100_000.0).contains(&v) {
                        return Err(bad("cpu must be between 0 and 100000 percent"));
                    }
                    cpu = Some(v);
                }
                Some(("mem", v)) => mem = Some(v.parse::<u64>().map_err(|_| bad("mem must be a number of bytes"))?),
                _ => return Err(bad("expected cpu=PCT and mem=BYTES")),
            }
        }
        match (cpu, mem) {
            (Some(cpu_percent), Some(mem_bytes_used)) => Ok(ProbeSpec::Fixed { cpu_percent, mem_bytes_used }),
            _ => Err(bad("both cpu= and mem= are required")),
        }
    }

    pub fn build(self) -> Box<dyn Probe> {
        match self {
            ProbeSpec::System => Box::new(SystemProbe::new()),
            ProbeSpec::Fixed { cpu_percent, mem_bytes_used } => {
                let real = SystemProbe::new().capacity();
                Box::new(FixedProbe { capacity: real, sample: Sample { cpu_percent, mem_bytes_used } })
            }
        }
    }
}

/// Pinned values, for tests and demos; capacity is still the machine's.
pub struct FixedProbe {
    pub capacity: Capacity,
    pub sample: Sample,
}

impl Probe for FixedProbe {
    fn capacity(&self) -> Capacity {
        self.capacity
    }
    fn sample(&mut self) -> Sample {
        self.sample
    }
}

/// The real machine, through sysinfo.
pub struct SystemProbe {
    sys: sysinfo::System,
}

impl SystemProbe {
    pub fn new() -> Self {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        SystemProbe { sys }
    }
}

impl Default for SystemProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe for SystemProbe {
    fn capacity(&self) -> Capacity {
        let cores = self.sys.cpus().len().max(1) as u32;
        Capacity { cpu_capacity_percent: cores * 100, mem_capacity_bytes: self.sys.total_memory() }
    }

    fn sample(&mut self) -> Sample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        // sysinfo reports the average over cores in percent; Roster counts percent of one core.
        let cores = self.sys.cpus().len().max(1) as f32;
        Sample { cpu_percent: self.sys.global_cpu_usage() * cores, mem_bytes_used: self.sys.used_memory() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixed_and_refuses_garbage() {
        assert_eq!(
            ProbeSpec::parse("fixed:cpu=50,mem=1000").expect("ok"),
            ProbeSpec::Fixed { cpu_percent: 50.0, mem_bytes_used: 1000 }
        );
        assert_eq!(ProbeSpec::parse("system").expect("ok"), ProbeSpec::System);
        for bad in ["fixed:cpu=x,mem=1", "fixed:cpu=1", "fixed:mem=1", "other", "fixed:cpu=-1,mem=2"] {
            let e = ProbeSpec::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("probe"), "{e}");
        }
    }
}

//! The scripted resource probe of a simulated server: a fixed capacity, and CPU and
//! memory use that follow a per-server pattern (a base load plus a slow triangle wave),
//! so placement and resource reporting see servers that differ and change over time.

use roster_real::probe::{Capacity, Probe, Sample};

/// Samples per period of the load wave.
const WAVE_PERIOD_SAMPLES: u64 = 40;

pub struct SimProbe {
    capacity: Capacity,
    base_cpu_percent: f32,
    base_mem_bytes: u64,
    samples: u64,
}

impl SimProbe {
    /// Server `index` of the world (0-based): each gets its own capacity and base load.
    pub fn for_server(index: u64) -> SimProbe {
        SimProbe {
            capacity: Capacity { cpu_capacity_percent: 400 + 100 * (index as u32 % 4), mem_capacity_bytes: 8 << 30 },
            base_cpu_percent: 20.0 + 15.0 * (index % 5) as f32,
            base_mem_bytes: (1 << 30) + (index % 3) * (512 << 20),
            samples: index * 7,
        }
    }
}

impl Probe for SimProbe {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn sample(&mut self) -> Sample {
        self.samples += 1;
        let phase = self.samples % WAVE_PERIOD_SAMPLES;
        let wave = phase.min(WAVE_PERIOD_SAMPLES - phase); // 0 ..= period / 2
        Sample {
            cpu_percent: self.base_cpu_percent + 4.0 * wave as f32,
            mem_bytes_used: self.base_mem_bytes + wave * (16 << 20),
        }
    }
}

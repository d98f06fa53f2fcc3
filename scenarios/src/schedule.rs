//! When a workload's messages are due: a constant rate, steps, a ramp or bursts.
//!
//! Time `t` is measured from the start of the **measured phase**. During warm-up a workload
//! sends at its initial pace (see [`Schedule::warmup`]); after the last step (or the end of a
//! ramp) the last rate holds. Everything is open loop: message `i` is due at
//! [`Schedule::due_time`]`(i)` whether or not earlier messages went out on time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::duration_text;

/// Below this many messages, a cumulative count is treated as the integer below it: it keeps
/// floating-point noise (`6000.000000001`) from adding a phantom message to expected counts.
const COUNT_EPSILON: f64 = 1e-6;

/// The pace of a workload group, for the whole group (all its producers together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `rate` messages per second, spaced evenly: message `i` is due at `i / rate`.
    Constant {
        /// Messages per second, greater than 0.
        rate: f64,
    },
    /// A sequence of constant rates, each held for its duration; the last one holds on.
    Steps {
        /// At least one step; rates may be 0 (a pause) but not all of them.
        steps: Vec<RateStep>,
    },
    /// A linear change from `from` to `to` msgs/s over `over`; `to` holds afterwards.
    Ramp {
        /// Rate at the start of the measured phase, msgs/s.
        from: f64,
        /// Rate reached after `over`, msgs/s.
        to: f64,
        /// How long the ramp takes.
        #[serde(with = "duration_text")]
        over: Duration,
    },
    /// `size` messages due at the same instant, once every `every`: an average of
    /// `size / every` msgs/s in spikes (typing indicators, presence storms).
    Bursts {
        /// Time between the starts of two bursts.
        #[serde(with = "duration_text")]
        every: Duration,
        /// Messages per burst, at least 1.
        size: u32,
    },
}

/// One step of [`Schedule::Steps`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateStep {
    /// Messages per second during this step (0 is a pause).
    pub rate: f64,
    /// How long the step lasts.
    #[serde(with = "duration_text")]
    pub duration: Duration,
}

impl Schedule {
    /// The offered rate at `t` (msgs/s). For bursts, the average rate `size / every`.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        match self {
            Self::Constant { rate } => *rate,
            Self::Steps { steps } => {
                let mut end = 0.0;
                for step in steps {
                    end += step.duration.as_secs_f64();
                    if t < end {
                        return step.rate;
                    }
                }
                steps.last().map_or(0.0, |s| s.rate)
            }
            Self::Ramp { from, to, over } => {
                let over = over.as_secs_f64();
                if t < over {
                    from + (to - from) * t / over
                } else {
                    *to
                }
            }
            Self::Bursts { every, size } => f64::from(*size) / every.as_secs_f64(),
        }
    }

    /// The rate at the start of the measured phase.
    pub fn initial_rate(&self) -> f64 {
        self.rate_at(Duration::ZERO)
    }

    /// The highest rate reached during the first `within` of the measured phase (msgs/s).
    pub fn peak_rate(&self, within: Duration) -> f64 {
        self.breakpoints(within)
            .into_iter()
            .map(|t| self.rate_at(t))
            .fold(0.0, f64::max)
    }

    /// The times, within `[0, within)`, at which the rate can change slope, plus the instant
    /// just before `within`: between two of them the rate is constant or linear, so its
    /// maximum over `[0, within)` is found at one of them.
    pub(crate) fn breakpoints(&self, within: Duration) -> Vec<Duration> {
        let mut points = vec![Duration::ZERO];
        match self {
            Self::Steps { steps } => {
                let mut end = Duration::ZERO;
                for step in steps {
                    end = end.saturating_add(step.duration);
                    if end < within {
                        points.push(end);
                    }
                }
            }
            Self::Ramp { over, .. } if *over < within => points.push(*over),
            _ => {}
        }
        if let Some(last) = within.checked_sub(Duration::from_nanos(1)) {
            points.push(last);
        }
        points
    }

    /// The schedule followed during warm-up: bursts keep their shape, every other schedule
    /// sends at its initial rate.
    pub fn warmup(&self) -> Schedule {
        match self {
            Self::Bursts { .. } => self.clone(),
            _ => Self::Constant {
                rate: self.initial_rate(),
            },
        }
    }

    /// The same schedule with every rate multiplied by `factor` (bursts come `factor` times
    /// as often, keeping their size). `None` when the result is not representable.
    pub fn scaled(&self, factor: f64) -> Option<Schedule> {
        Some(match self {
            Self::Constant { rate } => Self::Constant {
                rate: rate * factor,
            },
            Self::Steps { steps } => Self::Steps {
                steps: steps
                    .iter()
                    .map(|s| RateStep {
                        rate: s.rate * factor,
                        duration: s.duration,
                    })
                    .collect(),
            },
            Self::Ramp { from, to, over } => Self::Ramp {
                from: from * factor,
                to: to * factor,
                over: *over,
            },
            Self::Bursts { every, size } => Self::Bursts {
                every: Duration::try_from_secs_f64(every.as_secs_f64() / factor)
                    .ok()
                    .filter(|d| !d.is_zero())?,
                size: *size,
            },
        })
    }

    /// How many messages are due in `[0, t)` (the message due exactly at `t` is not counted).
    pub fn expected_messages(&self, t: Duration) -> u64 {
        if t.is_zero() {
            return 0;
        }
        if let Self::Bursts { every, size } = self {
            let bursts = t.as_nanos().div_ceil(every.as_nanos().max(1));
            return u64::try_from(bursts)
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(*size));
        }
        let count = (self.cumulative(t.as_secs_f64()) - COUNT_EPSILON)
            .ceil()
            .max(0.0);
        // `as` saturates for floats beyond u64::MAX; the count is non-negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = count as u64;
        count
    }

    /// When message `i` (counting from 0) is due, from the start of the measured phase.
    /// `None` when the schedule never gets that far (it ends at rate 0 before message `i`).
    pub fn due_time(&self, i: u64) -> Option<Duration> {
        #[allow(clippy::cast_precision_loss)] // exact below 2^53 messages
        let n = i as f64;
        let seconds = match self {
            Self::Constant { rate } => {
                if *rate <= 0.0 {
                    return None;
                }
                n / rate
            }
            Self::Steps { steps } => {
                let mut start = 0.0;
                let mut done = 0.0;
                for step in steps {
                    let length = step.duration.as_secs_f64();
                    let at_end = done + step.rate * length;
                    if at_end > n && step.rate > 0.0 {
                        return Duration::try_from_secs_f64(start + (n - done) / step.rate).ok();
                    }
                    start += length;
                    done = at_end;
                }
                let last = steps.last().map_or(0.0, |s| s.rate);
                if last <= 0.0 {
                    return None;
                }
                start + (n - done) / last
            }
            Self::Ramp { from, to, over } => {
                let over = over.as_secs_f64();
                let at_end = (from + to) / 2.0 * over;
                if at_end > n {
                    if i == 0 {
                        0.0
                    } else {
                        // Solve from·t + slope/2·t² = n for the first t ≥ 0, in the form
                        // that stays exact when the slope is 0 or negative.
                        let half_slope = (to - from) / (2.0 * over);
                        2.0 * n / (from + (from * from + 4.0 * half_slope * n).max(0.0).sqrt())
                    }
                } else {
                    if *to <= 0.0 {
                        return None;
                    }
                    over + (n - at_end) / to
                }
            }
            Self::Bursts { every, size } => {
                let burst = i / u64::from((*size).max(1));
                let nanos = every.as_nanos().checked_mul(u128::from(burst))?;
                return u64::try_from(nanos).ok().map(Duration::from_nanos);
            }
        };
        Duration::try_from_secs_f64(seconds).ok()
    }

    /// Messages due in `[0, t]` as a real number: the integral of the rate.
    fn cumulative(&self, t: f64) -> f64 {
        match self {
            Self::Constant { rate } => rate * t,
            Self::Steps { steps } => {
                let mut start = 0.0;
                let mut done = 0.0;
                for step in steps {
                    let length = step.duration.as_secs_f64();
                    if t < start + length {
                        return done + step.rate * (t - start);
                    }
                    start += length;
                    done += step.rate * length;
                }
                done + steps.last().map_or(0.0, |s| s.rate) * (t - start)
            }
            Self::Ramp { from, to, over } => {
                let over = over.as_secs_f64();
                if t < over {
                    from * t + (to - from) * t * t / (2.0 * over)
                } else {
                    (from + to) / 2.0 * over + to * (t - over)
                }
            }
            Self::Bursts { every, size } => (t / every.as_secs_f64()).ceil() * f64::from(*size),
        }
    }

    /// The length of the shaped part of the schedule (steps or ramp), if any.
    pub fn shaped_length(&self) -> Option<Duration> {
        match self {
            Self::Steps { steps } => Some(steps.iter().map(|s| s.duration).sum()),
            Self::Ramp { over, .. } => Some(*over),
            Self::Constant { .. } | Self::Bursts { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn constant_rate_spaces_messages_evenly() {
        let s = Schedule::Constant { rate: 1000.0 };
        assert_eq!(s.due_time(0), Some(Duration::ZERO));
        assert_eq!(s.due_time(1500), Some(ms(1500)));
        assert_eq!(s.expected_messages(Duration::from_secs(6)), 6000);
        assert_eq!(s.expected_messages(Duration::from_micros(1500)), 2);
    }

    #[test]
    fn bursts_share_a_due_time() {
        let s = Schedule::Bursts {
            every: ms(100),
            size: 50,
        };
        assert_eq!(s.due_time(0), Some(Duration::ZERO));
        assert_eq!(s.due_time(49), Some(Duration::ZERO));
        assert_eq!(s.due_time(50), Some(ms(100)));
        assert_eq!(s.rate_at(ms(3)), 500.0);
        assert_eq!(s.expected_messages(ms(100)), 50);
        assert_eq!(s.expected_messages(ms(101)), 100);
        assert_eq!(s.warmup(), s);
    }

    #[test]
    fn a_zero_rate_step_is_a_pause() {
        let s = Schedule::Steps {
            steps: vec![
                RateStep {
                    rate: 0.0,
                    duration: ms(2000),
                },
                RateStep {
                    rate: 100.0,
                    duration: ms(1000),
                },
            ],
        };
        assert_eq!(s.due_time(0), Some(ms(2000)));
        assert_eq!(s.due_time(150), Some(ms(3500)));
        assert_eq!(s.expected_messages(ms(2000)), 0);
        assert_eq!(s.expected_messages(ms(4000)), 200);
        assert_eq!(s.warmup(), Schedule::Constant { rate: 0.0 });
    }

    #[test]
    fn a_ramp_down_to_zero_ends() {
        let s = Schedule::Ramp {
            from: 100.0,
            to: 0.0,
            over: ms(2000),
        };
        assert_eq!(s.expected_messages(Duration::from_secs(10)), 100);
        assert!(s.due_time(99).is_some());
        assert_eq!(s.due_time(100), None);
    }
}

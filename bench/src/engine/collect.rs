//! Collecting: merges the tasks' interval snapshots, samples the broker each second and
//! publishes progress.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brokerbench_results::recorder::interval_of;
use brokerbench_results::{Collector, IntervalSnapshot, LatencySet};
use tokio::sync::{mpsc, watch};

use super::shared::{Clock, Shared};
use super::{Phase, Progress};
use crate::plan::Plan;
use crate::resources::ProcessSampler;

/// Merges snapshots, samples the broker each second and publishes progress.
pub(super) async fn collect(
    shared: Arc<Shared>,
    mut snapshots: mpsc::Receiver<IntervalSnapshot>,
    broker_pid: Option<u32>,
    progress: Option<watch::Sender<Progress>>,
    clock: Clock,
    total: Duration,
    plan: Plan,
) -> Collector {
    let mut collector = Collector::new();
    // Offered messages per interval, from the schedules.
    for info in &shared.producers {
        let Some(schedule) = &info.schedule else {
            continue;
        };
        let intervals =
            plan.duration.as_secs().max(1) + u64::from(plan.duration.subsec_nanos() > 0);
        let mut before = schedule.count_before(clock.warmup_ns);
        for i in 0..intervals {
            let end = (clock.warmup_ns + (i + 1) * 1_000_000_000).min(schedule.end_ns() + 1);
            let upto = schedule.count_before(end);
            collector.record_offered(i, upto.saturating_sub(before));
            before = upto;
        }
    }
    let mut sampler = broker_pid.and_then(ProcessSampler::new);
    let measure_start = clock.epoch + Duration::from_nanos(clock.warmup_ns);
    let mut tick = tokio::time::interval_at(measure_start.into(), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_published = 0u64;
    let mut last_tick = Instant::now();
    let mut latest_p99 = None;
    let mut window: Option<(u64, LatencySet)> = None;
    let mut ui_tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            snapshot = snapshots.recv() => match snapshot {
                Some(s) => {
                    if progress.is_some() {
                        // Keep the newest interval's e2e latency for the progress line.
                        let index = s.interval();
                        match &window {
                            Some((current, _)) if index < *current => {}
                            Some((current, set)) if index > *current => {
                                latest_p99 = set.e2e.value_at_quantile_ns(0.99).map(|ns| ns as f64 / 1000.0).or(latest_p99);
                                let mut set = LatencySet::default();
                                s.add_latencies_to(&mut set);
                                window = Some((index, set));
                            }
                            Some(_) => {
                                if let Some((_, set)) = window.as_mut() {
                                    s.add_latencies_to(set);
                                }
                            }
                            None => {
                                let mut set = LatencySet::default();
                                s.add_latencies_to(&mut set);
                                window = Some((index, set));
                            }
                        }
                    }
                    collector.ingest(s);
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if let (Some(s), Some(ns)) = (sampler.as_mut(), clock.measured(now)) {
                    if let Some(sample) = s.sample() {
                        // The sample covers the second that just ended.
                        let interval = interval_of(ns).saturating_sub(1);
                        if ns >= 1_000_000_000 && interval < plan.duration.as_secs().max(1) + 1 {
                            collector.record_broker_sample(interval, sample.cpu_percent, sample.rss_bytes);
                        }
                    }
                }
            }
            _ = ui_tick.tick(), if progress.is_some() => {
                let now = Instant::now();
                let published = shared.live.published.load(Ordering::Relaxed);
                let dt = now.duration_since(last_tick).as_secs_f64();
                let rate = if dt > 0.0 { (published - last_published.min(published)) as f64 / dt } else { 0.0 };
                last_published = published;
                last_tick = now;
                let elapsed = now.saturating_duration_since(clock.epoch);
                if let Some(tx) = &progress {
                    tx.send_modify(|p| {
                        if p.phase != Phase::Drain && p.phase != Phase::Done && shared.started.is_cancelled() {
                            p.phase = if elapsed.as_nanos() < u128::from(clock.warmup_ns) { Phase::Warmup } else { Phase::Measure };
                        }
                        p.elapsed = elapsed.min(total);
                        p.total = total;
                        p.published = published;
                        p.delivered = shared.live.delivered.load(Ordering::Relaxed);
                        p.errors = shared.live.errors.load(Ordering::Relaxed);
                        p.publish_rate = rate;
                        p.offered_rate = plan.offered_rate_at(elapsed.saturating_sub(Duration::from_nanos(clock.warmup_ns)));
                        p.p99_us = latest_p99;
                    });
                }
            }
        }
    }
    collector
}

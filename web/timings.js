// Recent durations (ms) of one kind of work, for whoever asks (the browser tests, a developer's
// console): the last `keep` of them, and their quantiles.
export class RecentTimes {
  constructor(keep) {
    this.keep = keep;
    this.times = [];
  }

  add(ms) {
    this.times.push(ms);
    if (this.times.length > this.keep) this.times.shift();
  }

  quantile(p) {
    const sorted = [...this.times].sort((a, b) => a - b);
    return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
  }
}

// the page's own share of a frame: drawing the camera frame and encoding it as JPEG, and
// drawing an answer
export const pageTimings = { encode: new RecentTimes(100), draw: new RecentTimes(100) };
window.depthstreamPage = { timings: pageTimings, median: (name) => pageTimings[name].quantile(0.5) };

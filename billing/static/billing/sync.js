// The upstream sync page's charts (Chart.js, vendored in portal/vendor/), on a time axis (x in
// milliseconds, so syncs hours or days apart are spaced as they happened): the credits left at
// OpenRouter and in the portal at each successful sync, and the drift between them with the alert
// threshold either way. The numbers come from the json_script block "sync-data" as exact decimal
// strings; the same figures are in the page's table.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const node = document.getElementById("sync-data");
  if (!node || typeof window.Chart === "undefined") return;
  const data = JSON.parse(node.textContent);
  const style = getComputedStyle(document.documentElement);
  const css = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const brand = css("--brand", "#2f5bea");
  const ok = css("--ok", "#1a7f4b");
  const muted = css("--muted", "#5b6478");
  const line = css("--line", "#e3e6ee");
  const warn = css("--warn", "#b7791f");
  const bad = css("--bad", "#c53030");
  const times = data.labels.map((iso) => Date.parse(iso));
  const zone = data.time_zone || "UTC";  // the organization's, as the page's table
  const when = (ms) => new Date(ms).toLocaleString("en", { timeZone: zone,
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });
  const day = (ms) => new Date(ms).toLocaleDateString("en", { timeZone: zone,
    month: "short", day: "numeric" });
  const short = (value) => String(value).replace(/(\.\d{4})\d*$/, "$1");
  const points = (series) => series.map((value, i) => ({ x: times[i], y: Number(value), raw: value }));
  const series = (label, values, color, extra = {}) => ({
    label, data: points(values), borderColor: color, backgroundColor: color, pointRadius: 2.5,
    tension: 0, ...extra,
  });
  // Ticks at whole hours or days: the smallest step that gives at most 6 of them.
  const HOUR = 3600 * 1000;
  const first = times[0];
  const last = times[times.length - 1];
  const step = [1, 3, 6, 12, 24, 48, 168].map((h) => h * HOUR)
    .find((s) => (last - first) / s <= 5) || 168 * HOUR;
  const x = {
    type: "linear",
    min: Math.floor((first - step / 4) / step) * step,
    max: Math.ceil((last + step / 4) / step) * step,
    grid: { display: false },
    ticks: { color: muted, maxRotation: 0, autoSkipPadding: 16, stepSize: step,
      callback: (value) => (step >= 24 * HOUR ? day(value) : when(value)) },
  };
  const y = (title) => ({ grid: { color: line }, border: { display: false },
    ticks: { color: muted }, title: { display: true, text: title, color: muted } });
  const options = (title) => ({
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "nearest", intersect: false, axis: "x" },
    plugins: {
      legend: { position: "bottom", labels: { color: muted, boxWidth: 12,
        filter: (item) => !item.text.endsWith("(below)") } },
      tooltip: { callbacks: {
        title: (items) => (items.length ? when(items[0].parsed.x) : ""),
        label: (ctx) => ` ${ctx.dataset.label}: ${short(ctx.raw.raw ?? ctx.raw.y)} credits`,
      } },
    },
    scales: { x, y: y(title) },
  });

  const left = document.getElementById("sync-left-chart");
  if (left) {
    new window.Chart(left, {
      type: "line",
      data: { datasets: [
        series("OpenRouter", data.upstream, brand),
        series("Portal", data.portal, ok),
      ] },
      options: options("credits left"),
    });
  }

  const drift = document.getElementById("sync-drift-chart");
  if (drift) {
    const datasets = [series("Drift", data.drift, warn, { fill: false })];
    if (data.threshold !== null) {
      const limit = Number(data.threshold);
      const edge = [x.min, x.max];
      for (const sign of [1, -1]) {
        datasets.push({
          label: sign > 0 ? "Alert threshold" : "Alert threshold (below)",
          data: edge.map((t) => ({ x: t, y: sign * limit, raw: String(sign * limit) })),
          borderColor: bad, borderWidth: 1, borderDash: [4, 4], pointRadius: 0,
        });
      }
    }
    new window.Chart(drift, { type: "line", data: { datasets }, options: options("drift (credits)") });
  }
});

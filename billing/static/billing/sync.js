// The upstream sync page's chart (Chart.js, vendored in portal/vendor/): credits left at
// OpenRouter and in the portal at each successful sync, and the drift between them (right axis),
// with the alert threshold either way. The numbers come from the json_script block "sync-data" as
// exact decimal strings; the same figures are in the page's table.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("sync-chart");
  const node = document.getElementById("sync-data");
  if (!canvas || !node || typeof window.Chart === "undefined") return;
  const data = JSON.parse(node.textContent);
  const style = getComputedStyle(document.documentElement);
  const css = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const brand = css("--brand", "#2f5bea");
  const muted = css("--muted", "#5b6478");
  const line = css("--line", "#e3e6ee");
  const warn = css("--warn", "#b7791f");
  const bad = css("--bad", "#c0392b");
  const when = (iso) => new Date(iso).toLocaleString("en", {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });
  const short = (value) => String(value).replace(/(\.\d{4})\d*$/, "$1");
  const threshold = data.threshold === null ? null : Number(data.threshold);
  const datasets = [
    { label: "OpenRouter: credits left", data: data.upstream.map(Number), borderColor: brand,
      backgroundColor: brand, yAxisID: "y", pointRadius: 2, tension: 0 },
    { label: "Portal: credits left", data: data.portal.map(Number), borderColor: "#1a7f4b",
      backgroundColor: "#1a7f4b", yAxisID: "y", pointRadius: 2, tension: 0 },
    { label: "Drift", data: data.drift.map(Number), borderColor: warn, backgroundColor: warn,
      yAxisID: "drift", pointRadius: 2, borderDash: [5, 4], tension: 0 },
  ];
  if (threshold !== null) {
    for (const sign of [1, -1]) {
      datasets.push({
        label: sign > 0 ? "Alert threshold" : "Alert threshold (below)",
        data: data.labels.map(() => sign * threshold),
        borderColor: bad, borderWidth: 1, borderDash: [2, 3], pointRadius: 0, yAxisID: "drift",
      });
    }
  }
  new window.Chart(canvas, {
    type: "line",
    data: { labels: data.labels.map(when), datasets },
    options: {
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: {
          position: "bottom",
          labels: { color: muted, boxWidth: 12, filter: (item) => !item.text.endsWith("(below)") },
        },
        tooltip: { callbacks: { label: (ctx) => {
          const raw = [data.upstream, data.portal, data.drift][ctx.datasetIndex];
          return ` ${ctx.dataset.label}: ${short(raw ? raw[ctx.dataIndex] : ctx.raw)} credits`;
        } } },
      },
      scales: {
        x: { grid: { display: false }, ticks: { color: muted, maxRotation: 0, autoSkipPadding: 12 } },
        y: { position: "left", grid: { color: line }, border: { display: false },
          ticks: { color: muted }, title: { display: true, text: "credits left", color: muted } },
        drift: { position: "right", grid: { display: false }, border: { display: false },
          ticks: { color: muted }, title: { display: true, text: "drift (credits)", color: muted } },
      },
    },
  });
});

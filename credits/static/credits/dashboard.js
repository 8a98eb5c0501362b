// The dashboard's charts (Chart.js, vendored in portal/vendor/): daily spend, spend over time
// split by team, model or operation, and spend by hour of day. The numbers come from
// json_script blocks as exact decimal strings; the same figures are in the page as tables.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  if (typeof window.Chart === "undefined") return;
  const style = getComputedStyle(document.documentElement);
  const css = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const brand = css("--brand", "#2f5bea");
  const muted = css("--muted", "#5b6478");
  const line = css("--line", "#e3e6ee");
  const palette = [brand, "#1a7f4b", "#b7791f", "#9b2c9b", "#2b8a9e", "#8a94a6"];
  const read = (id) => {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  };
  const day = (iso) => new Date(iso + "T00:00:00Z").toLocaleDateString(
    "en", { month: "short", day: "numeric", timeZone: "UTC" });
  const short = (value) => String(value).replace(/(\.\d{4})\d*$/, "$1");
  const yAxis = {
    beginAtZero: true,
    grid: { color: line },
    border: { display: false },
    ticks: { color: muted, precision: 2 },
    title: { display: true, text: "credits (USD)", color: muted },
  };
  const xAxis = { grid: { display: false }, ticks: { color: muted, maxRotation: 0, autoSkipPadding: 8 } };

  // Daily spend (one bar per day).
  const spendCanvas = document.getElementById("spend-chart");
  const spend = read("spend-data");
  if (spendCanvas && spend) {
    new window.Chart(spendCanvas, {
      type: "bar",
      data: {
        labels: spend.labels.map(day),
        datasets: [{ label: "Credits", data: spend.cost.map(Number), backgroundColor: brand,
          borderRadius: 3, maxBarThickness: 22 }],
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: (ctx) => {
            const requests = spend.events[ctx.dataIndex];
            return ` ${short(spend.cost[ctx.dataIndex])} credits · ${requests} request${requests === 1 ? "" : "s"}`;
          } } },
        },
        scales: { x: xAxis, y: yAxis },
      },
    });
  }

  // Spend over time, stacked by team, model or operation.
  const splitCanvas = document.getElementById("split-chart");
  const split = read("split-data");
  if (splitCanvas && split) {
    const datasets = (dimension) => split.by[dimension].map((series, i) => ({
      label: series.label,
      data: series.data.map(Number),
      backgroundColor: palette[i % palette.length],
      maxBarThickness: 22,
    }));
    const chart = new window.Chart(splitCanvas, {
      type: "bar",
      data: { labels: split.labels.map(day), datasets: datasets("team") },
      options: {
        maintainAspectRatio: false,
        animation: false,
        plugins: {
          legend: { position: "bottom", labels: { color: muted, boxWidth: 12 } },
          tooltip: { callbacks: { label: (ctx) => ` ${ctx.dataset.label}: ${short(ctx.raw)} credits` } },
        },
        scales: { x: { ...xAxis, stacked: true }, y: { ...yAxis, stacked: true } },
      },
    });
    const label = document.querySelector("[data-split-label]");
    for (const button of document.querySelectorAll("button[data-split]")) {
      button.addEventListener("click", () => {
        for (const other of document.querySelectorAll("button[data-split]")) {
          other.setAttribute("aria-pressed", String(other === button));
        }
        chart.data.datasets = datasets(button.dataset.split);
        chart.update();
        if (label) label.textContent = button.dataset.split;
      });
    }
  }

  // Spend by hour of day.
  const hoursCanvas = document.getElementById("hours-chart");
  const hours = read("hours-data");
  if (hoursCanvas && hours) {
    new window.Chart(hoursCanvas, {
      type: "bar",
      data: { labels: hours.labels, datasets: [{ label: "Credits", data: hours.cost.map(Number),
        backgroundColor: brand, borderRadius: 2 }] },
      options: {
        maintainAspectRatio: false,
        animation: false,
        plugins: { legend: { display: false },
          tooltip: { callbacks: { title: (items) => `${items[0].label}:00`,
            label: (ctx) => ` ${short(hours.cost[ctx.dataIndex])} credits` } } },
        scales: { x: xAxis, y: { ...yAxis, title: { display: false } } },
      },
    });
  }
});

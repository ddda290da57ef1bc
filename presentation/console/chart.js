// Charts as inline SVG, drawn by hand (a few shapes; no chart library to vendor). Every chart
// is a <figure> with a caption, an accessible name, and its figures as a table under a
// disclosure, so nothing shown only as a picture is lost to a screen reader.

import { h, formatNumber } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

/** A round axis maximum above `max` (1, 2 or 5 times a power of ten). */
function niceMax(max) {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) {
    if (max <= step * power) return step * power;
  }
  return 10 * power;
}

function dataTable(labels, values, labelName, valueName) {
  return h(
    "details",
    { class: "chart-data" },
    h("summary", {}, "Show the figures"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, labelName), h("th", { scope: "col", class: "num" }, valueName))),
        h(
          "tbody",
          {},
          labels.map((label, i) => h("tr", {}, h("td", {}, label), h("td", { class: "num" }, formatNumber(values[i])))),
        ),
      ),
    ),
  );
}

/**
 * A figure whose SVG is drawn at the width it is shown at (and again when that changes), so
 * text keeps its size on a phone and on a wide screen. `draw(width)` returns the SVG.
 */
function responsiveFigure(title, draw, data) {
  let drawnWidth = 720;
  let svg = draw(drawnWidth);
  const figure = h("figure", { class: "chart-figure" }, svg, h("figcaption", {}, title), data);
  if (typeof ResizeObserver === "function") {
    const observer = new ResizeObserver(() => {
      const width = Math.round(figure.clientWidth);
      if (width > 0 && Math.abs(width - drawnWidth) > 2) {
        drawnWidth = width;
        const next = draw(width);
        svg.replaceWith(next);
        svg = next;
      }
    });
    observer.observe(figure);
  }
  return figure;
}

/**
 * Vertical bars: `labels[i]` under bar i of height `values[i]`. `tickEvery`: label every n-th
 * bar (long series). Returns a <figure>.
 */
export function barChart({ title, labels, values, labelName = "bucket", valueName = "count", tickEvery }) {
  const draw = (width) => {
    const height = Math.max(160, Math.min(260, Math.round(width * 0.35)));
    const left = 48;
    const bottom = 28;
    const top = 10;
    const plotW = width - left - 8;
    const plotH = height - top - bottom;
    const max = niceMax(Math.max(0, ...values.filter((v) => typeof v === "number")));
    const n = Math.max(1, values.length);
    const slot = plotW / n;
    // About one label per 90 pixels.
    const every = tickEvery || Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 90))));
    const svg = s("svg", {
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      class: "chart",
      role: "img",
      "aria-label": title,
    });
    svg.appendChild(s("title", {}, title));
    for (const fraction of [0, 0.5, 1]) {
      const y = top + plotH * (1 - fraction);
      svg.appendChild(s("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }));
      svg.appendChild(s("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, formatNumber(max * fraction)));
    }
    values.forEach((value, i) => {
      const v = typeof value === "number" ? value : 0;
      const barH = (v / max) * plotH;
      // Bars fill 80% of their slot, but no wider than 64 px (a few buckets stay bars).
      const barW = Math.max(1, Math.min(slot * 0.8, 64));
      const x = left + i * slot + (slot - barW) / 2;
      const bar = s("rect", {
        x,
        y: top + plotH - barH,
        width: barW,
        height: Math.max(0, barH),
        class: "bar",
      });
      bar.appendChild(s("title", {}, `${labels[i]}: ${formatNumber(v)}`));
      svg.appendChild(bar);
      if (i % every === 0) {
        const centre = Math.min(Math.max(x + barW / 2, left + 30), width - 30);
        svg.appendChild(s("text", { x: centre, y: height - bottom + 16, class: "axis", "text-anchor": "middle" }, String(labels[i])));
      }
    });
    return svg;
  };
  return responsiveFigure(title, draw, dataTable(labels, values, labelName, valueName));
}

/**
 * Horizontal bars, one row per label, with the value (and an optional note such as a
 * percentage) written at the end of the bar. Suits ranked lists and funnels.
 */
export function hbarChart({ title, labels, values, notes = [], labelName = "name", valueName = "count" }) {
  const draw = (width) => {
    const rowH = 26;
    const labelW = Math.min(220, Math.round(width * 0.38));
    const height = Math.max(1, labels.length) * rowH + 8;
    const max = Math.max(1, ...values.filter((v) => typeof v === "number"));
    const maxChars = Math.max(6, Math.floor(labelW / 7.5));
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img", "aria-label": title });
    svg.appendChild(s("title", {}, title));
    labels.forEach((label, i) => {
      const v = typeof values[i] === "number" ? values[i] : 0;
      const y = 4 + i * rowH;
      const barW = (Math.max(10, width - labelW - 110) * v) / max;
      const text = String(label);
      svg.appendChild(s("text", { x: labelW - 8, y: y + rowH / 2 + 4, class: "axis", "text-anchor": "end" }, text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text));
      const bar = s("rect", { x: labelW, y: y + 4, width: Math.max(1, barW), height: rowH - 8, class: "bar" });
      bar.appendChild(s("title", {}, `${text}: ${formatNumber(v)}`));
      svg.appendChild(bar);
      const note = notes[i] ? ` (${notes[i]})` : "";
      svg.appendChild(s("text", { x: labelW + barW + 6, y: y + rowH / 2 + 4, class: "axis" }, `${formatNumber(v)}${note}`));
    });
    return svg;
  };
  return responsiveFigure(title, draw, dataTable(labels, values, labelName, valueName));
}

// Small DOM helpers shared by the pages: an element builder, number and time formats, an SVG
// line chart and horizontal bars. No framework: pages rebuild their parts with these.

const SVG = 'http://www.w3.org/2000/svg';

/** h('p', {class: 'x', onclick: f}, 'text', child) → element. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (key === 'style') element.style.cssText = value;
    else if (value === true) element.setAttribute(key, '');
    else element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function fmt(n) {
  return Number(n || 0).toLocaleString('en-US');
}

/** Unix seconds (or ms when `ms`) → "2026-12-01 18:40:05 UTC". */
export function fmtTime(value, ms = false) {
  if (value === undefined || value === null) return '—';
  const date = new Date(ms ? value : value * 1000);
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** Seconds → "1 h 2 min", "45 s". */
export function fmtDuration(seconds) {
  if (!seconds) return '0 s (online only)';
  const parts = [];
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (days) parts.push(`${days} d`);
  if (hours) parts.push(`${hours} h`);
  if (minutes) parts.push(`${minutes} min`);
  if (rest) parts.push(`${rest} s`);
  return parts.join(' ');
}

/** A status line for a region: polite for screen readers. */
export function status(text, kind = 'info') {
  return h('p', { class: `status ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/**
 * A line chart: `series` is [{name, color, values: [number]}], `labels` the x labels (one per
 * value). Answers an <figure> holding the SVG and a table of the same numbers for keyboard and
 * screen-reader users. The legend gives each series' total, or its last value when the values
 * are `cumulative` counters.
 */
export function lineChart(title, labels, series, { width = 760, height = 220, cumulative = false } = {}) {
  const pad = { left: 48, right: 12, top: 12, bottom: 28 };
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const count = Math.max(1, labels.length - 1);
  const x = (i) => pad.left + (i / count) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', title);
  svg.classList.add('chart');
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const fraction of [0, 0.5, 1]) {
    const value = Math.round(max * fraction);
    add('line', { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: 'grid' });
    add('text', { x: pad.left - 6, y: y(value) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(value));
  }
  const step = Math.max(1, Math.ceil(labels.length / 6));
  labels.forEach((label, i) => {
    if (i % step === 0 || i === labels.length - 1) {
      add('text', { x: x(i), y: height - 8, 'text-anchor': 'middle', class: 'axis' }, label);
    }
  });
  for (const s of series) {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    add('polyline', { points, fill: 'none', stroke: s.color, 'stroke-width': 2 });
  }
  const legend = h('ul', { class: 'legend' },
    series.map((s) => h('li', {}, h('span', { class: 'swatch', style: `background:${s.color}` }), `${s.name}: ${fmt(cumulative ? s.values.at(-1) : s.values.reduce((a, b) => a + b, 0))}`)));
  const table = h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Time'), series.map((s) => h('th', { scope: 'col' }, s.name)))),
    h('tbody', {}, labels.map((label, i) => h('tr', {}, h('th', { scope: 'row' }, label), series.map((s) => h('td', {}, fmt(s.values[i])))))));
  return h('figure', { class: 'chart-box' },
    h('figcaption', {}, title), svg, legend,
    h('details', {}, h('summary', {}, 'The numbers as a table'), table));
}

/** Horizontal bars: rows [{label, value, kind}] scaled to `total` (or the largest). */
export function bars(title, rows, total) {
  const max = Math.max(1, total || 0, ...rows.map((r) => r.value));
  return h('figure', { class: 'bars' },
    h('figcaption', {}, title),
    h('table', {}, h('tbody', {}, rows.map((row) => h('tr', { class: row.kind || '' },
      h('th', { scope: 'row' }, row.label),
      h('td', { class: 'bar-cell' }, h('span', { class: 'bar', style: `width:${(100 * row.value / max).toFixed(1)}%` })),
      h('td', { class: 'num' }, fmt(row.value)))))));
}

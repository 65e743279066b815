// A tiny two-series line chart on <canvas> for the host's live stats.
// Series `a` and `b` are each scaled to their own maximum; colours come from
// the CSS custom properties --chart-a, --chart-b and --chart-grid.

export class StatsChart {
  constructor(canvas, { capacity = 120 } = {}) {
    this.canvas = canvas;
    this.capacity = capacity;
    this.points = [];
    this.scheduled = false;
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => this.schedule()).observe(canvas);
    }
  }

  push(point) {
    this.points.push(point);
    if (this.points.length > this.capacity) this.points.shift();
    this.canvas.dataset.samples = String(this.points.length);
    this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.draw();
    });
  }

  draw() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const height = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext('2d');
    const css = getComputedStyle(canvas);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    ctx.clearRect(0, 0, width, height);

    const pad = 6 * dpr;
    ctx.strokeStyle = color('--chart-grid', '#444');
    ctx.lineWidth = dpr;
    for (let i = 0; i <= 4; i += 1) {
      const y = Math.round(pad + ((height - 2 * pad) * i) / 4) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(width, y);
      ctx.stroke();
    }
    this.line(ctx, 'a', color('--chart-a', '#ff4d6d'), width, height, pad, dpr);
    this.line(ctx, 'b', color('--chart-b', '#4dabf7'), width, height, pad, dpr);
  }

  line(ctx, key, stroke, width, height, pad, dpr) {
    const values = this.points.map((p) => Number(p[key]) || 0);
    if (values.length < 2) return;
    const max = Math.max(1, ...values);
    const step = width / (this.capacity - 1);
    const x0 = width - step * (values.length - 1);
    const rtl = getComputedStyle(this.canvas).direction === 'rtl';
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 2 * dpr;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    values.forEach((v, i) => {
      let x = x0 + i * step;
      if (rtl) x = width - x; // newest sample on the reading end
      const y = height - pad - ((height - 2 * pad) * v) / max;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

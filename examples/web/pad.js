// A drawing pad: dark ink on white, drawn with pointer events (mouse, pen or touch).
// The canvas's own pixels (its width x height, not its CSS size) are what the classifier sees.

/** Pen width in canvas pixels, 1/15 of the 105 x 105 pad. The glyph bundles' 28x28 nearest resize keeps
 *  one pixel in 3.75, so thinner pens lose strokes: on synthetic shapes drawn at 105 px
 *  (tools/stroke_width.py, the compact bundle, 6-way 5-shot) a 3-5 px pen gave 91 % right and 25 %
 *  "unknown", a 7-9 px pen 100 % and 0 %. */
export const PEN_WIDTH = 7;

export class DrawingPad {
  /**
   * @param {HTMLCanvasElement} canvas the pad (its width/height are the sample's pixel size)
   * @param {() => void} onStroke called after each finished stroke
   */
  constructor(canvas, onStroke) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { willReadFrequently: true });
    this.onStroke = onStroke;
    this.last = null;
    this.inked = false;
    this.clear();
    canvas.addEventListener('pointerdown', (e) => this._down(e));
    canvas.addEventListener('pointermove', (e) => this._move(e));
    canvas.addEventListener('pointerup', (e) => this._up(e));
    canvas.addEventListener('pointercancel', (e) => this._up(e));
  }

  /** White paper, no ink. */
  clear() {
    this.ctx.fillStyle = '#fff';
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.inked = false;
  }

  /** The pad's pixels: { data: Uint8ClampedArray [H * W * 4] RGBA, height, width, channels: 4 } (a copy). */
  pixels() {
    const { width, height } = this.canvas;
    const img = this.ctx.getImageData(0, 0, width, height);
    return { data: img.data, height, width, channels: 4 };
  }

  _point(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.canvas.width / r.width), (e.clientY - r.top) * (this.canvas.height / r.height)];
  }

  _down(e) {
    if (e.button !== 0) return;
    this.canvas.setPointerCapture(e.pointerId);
    this.last = this._point(e);
    this._segment(this.last, this.last);
  }

  _move(e) {
    if (!this.last) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) {
      const p = this._point(ev);
      this._segment(this.last, p);
      this.last = p;
    }
  }

  _up(e) {
    if (!this.last) return;
    this._segment(this.last, this._point(e));
    this.last = null;
    this.onStroke();
  }

  _segment(a, b) {
    const c = this.ctx;
    c.strokeStyle = '#000';
    c.lineWidth = PEN_WIDTH;
    c.lineCap = 'round';
    c.lineJoin = 'round';
    c.beginPath();
    c.moveTo(a[0], a[1]);
    c.lineTo(b[0], b[1]);
    c.stroke();
    this.inked = true;
  }
}

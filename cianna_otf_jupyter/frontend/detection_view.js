// CIANNA On-The-Fly: region drawing on the detection widget's Aladin view.
//
// aladin.py appends this file to ipyaladin's own module, after renaming that module's default
// export to `__ciannaOtfIpyaladin`; the loader in front of it keeps every Aladin Lite instance it
// creates on its div (`__ciannaOtfViewKey`). The messages are protocol 1 of widget.py:
//   front end -> kernel: {event: "hello"}, {event: "region", shape, ...}
//   kernel -> front end: {event_name: "cianna_otf_select", shape: "rect"|"circle"|"polygon"|"click"},
//                        {event_name: "cianna_otf_goto", ra, dec},
//                        {event_name: "cianna_otf_image_options", name, options: {minCut, maxCut, stretch, colormap}}
// ipyaladin's own message handler throws on event names it does not know, so it is given a view
// of the model that never shows it ours; everything else of ipyaladin runs untouched.

const __ciannaOtfProtocol = 1;
const __ciannaOtfSelectEvent = "cianna_otf_select";
const __ciannaOtfGotoEvent = "cianna_otf_goto";
const __ciannaOtfImageOptionsEvent = "cianna_otf_image_options";
/** Our kernel -> front end events: ipyaladin's handler must never see them. */
const __ciannaOtfEvents = new Set([__ciannaOtfSelectEvent, __ciannaOtfGotoEvent, __ciannaOtfImageOptionsEvent]);
/** Our shape names -> Aladin Lite's selection modes. "click" arms nothing (clicks identify). */
const __ciannaOtfSelectModes = { rect: "rect", circle: "circle", polygon: "poly" };
/** A drag shorter than this (view pixels) is a slip of the mouse, not a region. */
const __ciannaOtfMinimumDrag = 3;

function __ciannaOtfWithoutOurMessages(model) {
  // A stand-in for the model whose "msg:custom" listeners never see our event.
  const on = (name, callback, context) => {
    if (name !== "msg:custom") return model.on(name, callback, context);
    const filtered = function (message, buffers) {
      if (message && __ciannaOtfEvents.has(message.event_name)) return;
      return callback.call(this, message, buffers);
    };
    return model.on(name, filtered, context);
  };
  return new Proxy(model, {
    get(target, property) {
      if (property === "on") return on;
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function __ciannaOtfSky(aladin, x, y) {
  // ICRS degrees of a view pixel, or null where the projection has no sky (outside the globe).
  try {
    const world = aladin.pix2world(x, y, "icrs");
    if (!world) return null;
    const [ra, dec] = world;
    return Number.isFinite(ra) && Number.isFinite(dec) ? [ra, dec] : null;
  } catch (error) {
    return null;
  }
}

function __ciannaOtfSeparation([ra1, dec1], [ra2, dec2]) {
  // Great-circle distance in degrees (haversine: exact for the small circles drawn here).
  const rad = Math.PI / 180;
  const sinDdec = Math.sin(((dec2 - dec1) * rad) / 2);
  const sinDra = Math.sin(((ra2 - ra1) * rad) / 2);
  const h = sinDdec * sinDdec + Math.cos(dec1 * rad) * Math.cos(dec2 * rad) * sinDra * sinDra;
  return (2 * Math.asin(Math.min(1, Math.sqrt(h)))) / rad;
}

/** The region message for an Aladin Lite selection, or null for a selection too small to mean one. */
function __ciannaOtfRegionMessage(aladin, selection) {
  const sky = (x, y) => __ciannaOtfSky(aladin, x, y);
  if (selection.label === "rect") {
    const { x, y, w, h } = selection;
    if (w < __ciannaOtfMinimumDrag || h < __ciannaOtfMinimumDrag) return null;
    const corners = [sky(x, y), sky(x + w, y), sky(x + w, y + h), sky(x, y + h)];
    return { event: "region", shape: "rect", ra_dec: corners };
  }
  if (selection.label === "circle") {
    if (selection.r < __ciannaOtfMinimumDrag) return null;
    const centre = sky(selection.x, selection.y);
    // the radius along the four axes of the view, the largest: a circle on screen holds the region
    const edges = [[1, 0], [-1, 0], [0, 1], [0, -1]]
      .map(([dx, dy]) => sky(selection.x + dx * selection.r, selection.y + dy * selection.r))
      .filter((edge) => edge !== null);
    if (centre === null || edges.length === 0) {
      return { event: "region", shape: "circle", ra: null, dec: null, radius: null };
    }
    const radius = Math.max(...edges.map((edge) => __ciannaOtfSeparation(centre, edge)));
    return { event: "region", shape: "circle", ra: centre[0], dec: centre[1], radius };
  }
  if (selection.label === "polygon") {
    const vertices = selection.vertices || [];
    if (vertices.length < 3) return null;
    return { event: "region", shape: "polygon", ra_dec: vertices.map((v) => sky(v.x, v.y)) };
  }
  return null;
}

/** New cuts, stretch and colour map for the FITS layer `name` (added by ipyaladin's add_fits). */
function __ciannaOtfSetImageOptions(aladin, name, options) {
  let layer = null;
  try {
    layer = aladin.getOverlayImageLayer(name);
  } catch (error) {
    layer = null;
  }
  if (!layer) return;
  if (typeof layer.setCuts === "function" && options.minCut !== undefined && options.maxCut !== undefined) {
    layer.setCuts(options.minCut, options.maxCut);
  }
  if (typeof layer.setColormap === "function" && (options.colormap || options.stretch)) {
    const colormap = options.colormap || (layer.getColormap ? layer.getColormap() : "grayscale");
    layer.setColormap(colormap, options.stretch ? { stretch: options.stretch } : undefined);
  }
}

function __ciannaOtfDetectionView(base) {
  return {
    initialize: base.initialize,
    async render(context) {
      const { model, el } = context;
      const cleanup = await base.render({ ...context, model: __ciannaOtfWithoutOurMessages(model) });
      const div = el.querySelector(".aladin-widget");
      const aladin = div ? div[__ciannaOtfViewKey] : undefined;
      if (!aladin) {
        console.warn("cianna-otf: no Aladin Lite view found; region drawing is off");
        return cleanup;
      }
      // Aladin Lite lists the objects under a drawn shape (ipyaladin listens for selections) or
      // a clicked marker in a raw table over the lower half of the view; the widget's own table
      // lists the sources, so that one is not shown in this view
      const style = document.createElement("style");
      style.textContent = "[data-cianna-otf-protocol] .aladin-measurement-div { display: none !important; }";
      el.appendChild(style);
      // the armed tool is also shown on the element (data-cianna-otf-armed), for styling and tests
      const arm = (shape) => {
        const mode = __ciannaOtfSelectModes[shape];
        if (mode === undefined) {
          delete el.dataset.ciannaOtfArmed; // "click": ipyaladin's click events identify sources
          return;
        }
        aladin.select(mode, (selection) => {
          const message = __ciannaOtfRegionMessage(aladin, selection);
          if (message === null) {
            arm(shape); // a slip: keep the tool armed
          } else {
            delete el.dataset.ciannaOtfArmed;
            model.send(message);
          }
        });
        el.dataset.ciannaOtfArmed = shape;
      };
      const onMessage = (message) => {
        if (!message) return;
        if (message.event_name === __ciannaOtfSelectEvent) arm(message.shape);
        if (message.event_name === __ciannaOtfGotoEvent) aladin.gotoRaDec(message.ra, message.dec);
        if (message.event_name === __ciannaOtfImageOptionsEvent) {
          __ciannaOtfSetImageOptions(aladin, message.name, message.options || {});
        }
      };
      model.on("msg:custom", onMessage);
      el.dataset.ciannaOtfProtocol = String(__ciannaOtfProtocol);
      model.send({ event: "hello", protocol: __ciannaOtfProtocol });
      return () => {
        model.off("msg:custom", onMessage);
        if (typeof cleanup === "function") cleanup();
      };
    },
  };
}

export default __ciannaOtfDetectionView(__ciannaOtfIpyaladin);

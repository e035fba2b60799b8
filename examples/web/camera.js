// Webcam frames for colour bundles: getUserMedia into a <video>, one frame copied out on demand.

/** Start the camera into `video` (asks the user's permission); resolves when frames arrive. */
export async function startCamera(video) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  video.srcObject = stream;
  await video.play();
  return stream;
}

/** Stop every track of the camera stream in `video`, if any. */
export function stopCamera(video) {
  const stream = video.srcObject;
  if (stream) for (const t of stream.getTracks()) t.stop();
  video.srcObject = null;
}

/** The current frame: { data: Uint8ClampedArray [H * W * 4] RGBA, height, width, channels: 4 }, or null before the first frame. */
export function grabFrame(video, scratch) {
  const width = video.videoWidth, height = video.videoHeight;
  if (!width || !height) return null;
  scratch.width = width;
  scratch.height = height;
  const ctx = scratch.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, width, height);
  return { data: ctx.getImageData(0, 0, width, height).data, height, width, channels: 4 };
}
